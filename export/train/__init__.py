"""Training, distillation and data plumbing for the KeyFace Live demo model (issue #7)."""
