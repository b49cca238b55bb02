//! Message encoding for every data channel: postcard, with one mapping of
//! its errors into the crate's.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Encodes `value` into `buf` (cleared first, capacity kept for reuse).
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<()> {
    buf.clear();
    let taken = std::mem::take(buf);
    *buf = postcard::to_extend(value, taken).map_err(|e| Error::Encode { detail: e.to_string() })?;
    Ok(())
}

/// Decodes a whole message: bytes left over are an error too, since they
/// mean the message was of another type.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| Error::Decode { detail: e.to_string() })?;
    if !rest.is_empty() {
        return Err(Error::Decode { detail: format!("{} bytes left unread", rest.len()) });
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_leftovers() {
        let mut bytes = Vec::new();
        encode_into(&(42u32, None::<u8>, "hello".to_string()), &mut bytes).unwrap();
        assert_eq!(decode::<(u32, Option<u8>, String)>(&bytes).unwrap(), (42, None, "hello".to_string()));
        assert!(matches!(decode::<u8>(&bytes), Err(Error::Decode { .. })));
        assert!(matches!(decode::<String>(&[0xff, 0xff, 0xff]), Err(Error::Decode { .. })));
    }
}
