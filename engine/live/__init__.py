"""The real-time engine: live sessions on a shared engine, driven by a clock."""
