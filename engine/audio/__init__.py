"""Audio front-end: input decoding/resampling, encoders, frame alignment, streaming and VAD."""
