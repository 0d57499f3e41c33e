//! Integration tests of the ModelFactory UI: one binary (see STYLE.md).

mod api;
mod browser;
mod harness;
mod ui;
mod wallet;
