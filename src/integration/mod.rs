//! integration (being written).
