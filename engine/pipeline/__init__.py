"""Putting the stages together: schedules, offline rendering and (later) the live scheduler."""
