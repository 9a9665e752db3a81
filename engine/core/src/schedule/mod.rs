//! Scheduling policy (filled in below).
