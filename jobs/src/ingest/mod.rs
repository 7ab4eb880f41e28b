//! Raw input: the raw layout's day folders, the per-line checks of
//! events.md, and the event-time rules they apply.

pub mod event;
pub mod event_time;
pub mod listing;
pub mod offsets;
pub mod raw_scan;
