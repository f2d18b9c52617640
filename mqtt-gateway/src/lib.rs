//! Placeholder: this crate is filled by its own issue; it exports nothing yet.
#![no_std]
