"""Trainer: aligned-crop cache, P x K batches, triplet loss with online mining, LFW-protocol eval, export."""
