//! Audio for voicecare: PCM frames, G.711 and friends.
//!
//! This crate knows about samples, not calls: nothing here knows who is speaking
//! or what a database is.

pub mod g711;
