//! echo slice
