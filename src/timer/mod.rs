//! timer (placeholder until its issue lands).
