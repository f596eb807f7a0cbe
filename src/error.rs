//! Errors that know their HTTP meaning.
