//! The unsafe edge: every `unsafe` block of fastpm lives under this module, each with a
//! `// SAFETY:` comment. Everything above it speaks safe Rust.

pub mod asyncfd;
pub mod child;
pub mod fdpass;
pub mod filelock;
pub mod fork;
pub mod inherit;
pub mod localtime;
pub mod php_embed;
pub mod pmutex;
pub mod privileges;
pub mod rusage;
pub mod shm;
pub mod sockopt;
