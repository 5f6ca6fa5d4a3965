//! GRIP (Pushpin's hold instructions) read from a relayed app's CGI header block. Filled in by
//! the GRIP work: see `hold/mod.rs`.
