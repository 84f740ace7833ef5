"""Recognition of one face: the embedder (an engine plus the model card's pre/post-processing), the quality
gates, and the one crop -> gate -> embed path that the video stages, photos and enrolment share."""
