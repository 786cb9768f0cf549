//! The limits every request is checked against, and the checks.
//!
//! Limits keep one careless or hostile client from hurting everyone else: a huge
//! value would be held in memory on every replica and copied over the network N
//! times. Each check names what was wrong and what is allowed, so the person who
//! hit it knows what to change.

use crate::{Error, Result};

/// Keys are at most 1 KiB: they are copied into every index, digest and trace.
pub const MAX_KEY_BYTES: usize = 1024;
/// Values are at most 1 MiB: enough for documents, small enough to replicate fast.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// gRPC messages larger than this are refused from their length prefix, before
/// the body is read into memory. It is well above the value limit so that a value
/// a little too large gets the precise message from [`check_value`] instead.
pub const MAX_MESSAGE_BYTES: usize = 4 * MAX_VALUE_BYTES;
/// Entries a scan returns when the request does not say.
pub const DEFAULT_SCAN_LIMIT: usize = 100;
/// The most entries one scan returns; page with `start_after` for more.
pub const MAX_SCAN_LIMIT: usize = 1000;

/// A key must be non-empty and at most [`MAX_KEY_BYTES`] bytes of UTF-8.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(
            "the key is empty; give a key of 1 to 1024 bytes".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::InvalidArgument(format!(
            "key is {} bytes; the limit is {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    Ok(())
}

/// A value may be empty, and at most [`MAX_VALUE_BYTES`] bytes.
pub fn check_value(value: &[u8]) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES}",
            value.len()
        )));
    }
    Ok(())
}

/// The number of entries a scan returns: the default for 0, else at most the maximum.
pub fn scan_limit(requested: u32) -> Result<usize> {
    match requested as usize {
        0 => Ok(DEFAULT_SCAN_LIMIT),
        n if n <= MAX_SCAN_LIMIT => Ok(n),
        n => Err(Error::InvalidArgument(format!(
            "scan limit {n} is too high; ask for 1 to {MAX_SCAN_LIMIT} and page with start_after"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_size_and_the_limit() {
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        let err = check_key(&"k".repeat(MAX_KEY_BYTES + 1)).unwrap_err();
        assert_eq!(err.to_string(), "key is 1025 bytes; the limit is 1024");
        assert!(check_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        let err = check_value(&vec![0; 2 * MAX_VALUE_BYTES]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "value is 2097152 bytes; the limit is 1048576"
        );
        assert!(check_key("").is_err());
        assert_eq!(scan_limit(0).unwrap(), DEFAULT_SCAN_LIMIT);
        assert!(scan_limit(5000).is_err());
    }
}
