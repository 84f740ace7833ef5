"""Unknown people: sightings of faces nobody enrolled, grouped into clusters with stable pseudonymous ids,
named, merged, searched and forgotten (sightings, directory, recorder, clustering, operations)."""
