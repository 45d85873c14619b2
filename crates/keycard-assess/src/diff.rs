//! Progress between two assessments.
