"""Safe self-enrolment: a confidently recognised face may become a new template of the person it matched.

A gallery enrolled from a few photos misses how people look on the cameras (angle, light, glasses). Adding
faces the system recognised itself closes that gap, but each added template also widens what the identity
accepts, so a wrong addition makes the next wrong match likelier. Every rule below guards one way that goes
wrong, and they run in this order (the first that fails is the decision's reason):

1. `strong`: the face passed the strict quality gates. Blurred or profile faces give noisy embeddings; a
   template from one matches strangers.
2. similarity >= threshold + `margin_above`: a face that only just matched may be a lookalike; only clear
   matches teach the gallery.
3. margin over the runner-up >= `min_margin`: a face close to two people says little about either, and
   adding it would pull the two identities together.
4. the identity exists and has fewer than `max_auto` auto templates: the cap bounds how far the automatic part
   can outweigh what a person enrolled, and how much a mistake costs to undo (`remove_auto_templates`).
5. diversity: its best similarity to all the identity's templates is below `diversity`; a face the gallery
   already has adds nothing new and would spend the cap on near-duplicates.
6. drift guard: its best similarity to the MANUAL templates is >= threshold. Rule 2 alone lets a chain of auto
   templates walk away from the person (each new face close to the last auto template, further from the
   enrolled ones) until it reaches someone else; anchoring every addition to what a person enrolled means the
   walk stops where the enrolled photos would no longer match.

An accepted face is added with template id `auto-<sha1 of its int8-rounded embedding, 16 hex>` (AUTO_PREFIX),
in a write that re-checks, atomically, that the identity is still the one matched and still under the cap.

Given the embedder's `fingerprint`, a face that passed every rule is still not added to a gallery bound to another
model (a harmonic model matching an older model's gallery: binding.py): a gallery never mixes two models'
templates. That decision is OTHER_MODEL, logged once as a warning, and the live pipeline carries on matching.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from pipeline.core.errors import GalleryError
from pipeline.gallery import codec
from pipeline.gallery.identity import AUTO_PREFIX, RECORD_FIELD, is_auto
from pipeline.gallery.store import GalleryStore

log = logging.getLogger(__name__)

ADDED = "added"
WEAK_FACE = "weak_face"  # 1: not through the strict quality gates
LOW_SIMILARITY = "low_similarity"  # 2: below threshold + margin_above
SMALL_MARGIN = "small_margin"  # 3: too close to the runner-up
NO_IDENTITY = "no_identity"  # 4: removed (or renamed away) since the match
AUTO_CAP = "auto_cap"  # 4: max_auto auto templates already
NOT_DIVERSE = "not_diverse"  # 5: too like a template it already has
DRIFT = "drift"  # 6: no longer matches the manual templates
DUPLICATE = "duplicate"  # the very same auto template id was already stored
OTHER_MODEL = "other_model"  # the gallery holds another (older, harmonic) model's templates than the embedder's


@dataclass(frozen=True)
class Decision:
    added: bool
    reason: str  # one of the constants above
    template_id: str | None = None  # the auto template written (only when added)


class _Refused(GalleryError):
    """Raised inside the write's hook to abort it with a decision reason (nothing is written)."""

    def __init__(self, reason: str):
        super().__init__(f"self-enrolment refused: {reason}")
        self.reason = reason


class SelfEnrolment:
    """`SelfEnrolment().consider(store, identity_id, embedding, similarity, runner_up, threshold, strong)`;
    `decisions` counts every decision by reason. `fingerprint`: the embedder's model (None: the gallery's own)."""

    def __init__(self, margin_above: float = 0.10, min_margin: float = 0.10, diversity: float = 0.92,
                 max_auto: int = 5, fingerprint: str | None = None):
        for label, value in (("margin_above", margin_above), ("min_margin", min_margin)):
            if not 0.0 <= value <= 2.0:
                raise GalleryError(f"self-enrolment {label} must be a cosine margin in [0, 2], got {value!r}")
        if not 0.0 < diversity <= 1.0:
            raise GalleryError(f"self-enrolment diversity must be a cosine in (0, 1], got {diversity!r}")
        if isinstance(max_auto, bool) or not isinstance(max_auto, int) or max_auto < 1:
            raise GalleryError(f"self-enrolment max_auto must be a positive integer, got {max_auto!r}")
        self.margin_above, self.min_margin = float(margin_above), float(min_margin)
        self.diversity, self.max_auto = float(diversity), max_auto
        self.decisions: Counter[str] = Counter()
        self.fingerprint = fingerprint
        self._warned_other_model = False

    def consider(self, store: GalleryStore, identity_id: str, embedding: np.ndarray, similarity: float,
                 runner_up_similarity: float | None, threshold: float, strong: bool, offset: float = 0.0) -> Decision:
        """Add `embedding` (the face matched to `identity_id` at `similarity`) as an auto template if every rule
        holds; GalleryError for an embedding that is not one finite unit vector of the gallery's dim. `offset`:
        the face's cohort offset (`Match.offset`), which the matcher's scores and threshold include."""
        _check_finite("offset", offset)
        decision = self._decide(store, identity_id, embedding, similarity, runner_up_similarity, threshold, strong,
                                offset)
        self.decisions[decision.reason] += 1
        return decision

    def _decide(self, store, identity_id, embedding, similarity, runner_up_similarity, threshold, strong,
                offset) -> Decision:
        face = codec.check_embeddings(np.asarray(embedding).reshape(1, -1))[0]
        _check_finite("similarity", similarity)
        _check_finite("threshold", threshold)
        if runner_up_similarity is not None:  # None: no other identity to be confused with
            _check_finite("runner_up_similarity", runner_up_similarity)
        if not strong:
            return Decision(False, WEAK_FACE)
        if similarity < threshold + self.margin_above:
            return Decision(False, LOW_SIMILARITY)
        if runner_up_similarity is not None and similarity - runner_up_similarity < self.min_margin:
            return Decision(False, SMALL_MARGIN)
        found = store.read_full(identity_id)
        if found is None:
            return Decision(False, NO_IDENTITY)
        identity, template_ids, templates = found
        if templates.shape[1] != len(face):
            raise GalleryError(f"gallery {store.gallery!r} holds {templates.shape[1]}-d templates; refusing a "
                               f"{len(face)}-d face for self-enrolment")
        auto = np.array([is_auto(t) for t in template_ids], dtype=bool)
        if auto.sum() >= self.max_auto:
            return Decision(False, AUTO_CAP)
        sims = templates @ face
        if len(sims) and sims.max() >= self.diversity:
            return Decision(False, NOT_DIVERSE)
        if auto.all() or sims[~auto].max() - offset < threshold:  # on the matcher's score, like the threshold
            return Decision(False, DRIFT)
        return self._add(store, identity_id, identity.name, face)

    def _add(self, store: GalleryStore, identity_id: str, name: str, face: np.ndarray) -> Decision:
        template_id = auto_template_id(face)
        key = store.keys.identity(identity_id)
        bound = store.fingerprint
        if bound is None:  # the gallery was cleared since read_full
            return Decision(False, NO_IDENTITY)
        if self.fingerprint is not None and bound != self.fingerprint:
            self._warn_other_model(store.gallery, bound)
            return Decision(False, OTHER_MODEL)

        def still_matched(written_id: str):
            # On the state the write commits against: the name still means the identity matched (not removed,
            # not renamed away and re-used), and no other worker filled the cap meanwhile.
            if written_id != identity_id:
                raise _Refused(NO_IDENTITY)
            tids = [t.decode() for t in store.client.hkeys(key) if t != RECORD_FIELD]
            if sum(is_auto(t) for t in tids) >= self.max_auto:
                raise _Refused(AUTO_CAP)
            return lambda pipe: None
        try:
            # The embedder's model (bind refuses it should the gallery be re-bound meanwhile), else the gallery's.
            result = store.add(name, face[None], [template_id], self.fingerprint or bound, also=still_matched)
        except _Refused as refused:
            return Decision(False, refused.reason)
        if not result.added:
            return Decision(False, DUPLICATE)
        return Decision(True, ADDED, template_id)

    def _warn_other_model(self, gallery: str, bound: str) -> None:
        if not self._warned_other_model:
            self._warned_other_model = True
            log.warning("self-enrolment is off for gallery %r: it holds templates of model %s and the embedder is "
                        "model %s (harmonic with it: faces are matched, never added); re-embed the gallery for "
                        "this model with enroll.py --gallery %s migrate --model NEW_CARD.json to self-enrol",
                        gallery, bound, self.fingerprint, gallery)


def _check_finite(label: str, value) -> None:
    """GalleryError unless `value` is a finite number: NaN would pass every comparison of the rules."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
        raise GalleryError(f"self-enrolment needs a finite {label}, got {value!r}")


def auto_template_id(face: np.ndarray) -> str:
    """`auto-` + 16 hex of the SHA-1 of the face rounded to int8: the same face twice is one template."""
    codes = np.clip(np.rint(np.asarray(face, np.float32) * 127.0), -127, 127).astype(np.int8)
    return AUTO_PREFIX + hashlib.sha1(codes.tobytes()).hexdigest()[:16]
