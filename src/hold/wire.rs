//! See `hold/mod.rs`: this module's part of held requests (being written).
