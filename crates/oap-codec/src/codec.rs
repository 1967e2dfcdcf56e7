//! [`OapCodec`]: framing with the `max_frame` cap checked from the 4-byte
//! header before a single body byte is reserved, in the decoder and the
//! encoder alike.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::error::{DecodeError, EncodeError};
use crate::frame::Frame;

/// The protocol's frame cap: `len` may never exceed 1 MiB.
pub const MAX_FRAME: u32 = 1_048_576;
/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

/// OAP/1 frame codec.
///
/// The decoder returns a frame's payload as a slice of the read buffer (no
/// copy). It never reserves more than `max_frame` bytes for a frame: an
/// oversize length is rejected from the header alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OapCodec {
    max_frame: u32,
}

impl OapCodec {
    /// A codec with the protocol cap, [`MAX_FRAME`].
    pub const fn new() -> OapCodec {
        OapCodec { max_frame: MAX_FRAME }
    }

    /// A codec with a lower cap; values above [`MAX_FRAME`] are clamped to it.
    pub const fn with_max_frame(max_frame: u32) -> OapCodec {
        let max_frame = if max_frame > MAX_FRAME { MAX_FRAME } else { max_frame };
        OapCodec { max_frame }
    }

    /// The cap on `len` this codec enforces.
    pub const fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Checks the header at the front of `src`, if it has arrived.
    ///
    /// Returns the whole frame's length on the wire (header included) once the
    /// 4 header bytes are there and valid. Callers use it to tell how much of
    /// a frame is still missing without decoding.
    pub fn frame_len(&self, src: &[u8]) -> Result<Option<usize>, DecodeError> {
        let Some(header) = src.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*header);
        if len == 0 {
            return Err(DecodeError::Empty);
        }
        if len > self.max_frame {
            return Err(DecodeError::TooLarge { len, max: self.max_frame });
        }
        Ok(Some(HEADER_LEN + len as usize))
    }

    fn check_len(&self, frame: &Frame) -> Result<(), EncodeError> {
        let len = frame.encoded_len() - HEADER_LEN;
        if len > self.max_frame as usize {
            return Err(EncodeError::TooLarge { len, max: self.max_frame });
        }
        Ok(())
    }
}

impl Default for OapCodec {
    fn default() -> OapCodec {
        OapCodec::new()
    }
}

impl Decoder for OapCodec {
    type Item = Frame;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(total) = self.frame_len(src)? else {
            return Ok(None);
        };
        if src.len() < total {
            // Bounded: `total` was checked against `max_frame` above.
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(total).freeze();
        frame.advance(HEADER_LEN);
        let kind = frame.get_u8();
        Frame::decode(kind, frame).map(Some)
    }
}

impl Encoder<&Frame> for OapCodec {
    type Error = EncodeError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.check_len(frame)?;
        dst.reserve(frame.encoded_len());
        frame.encode_into(dst);
        Ok(())
    }
}

impl Encoder<Frame> for OapCodec {
    type Error = EncodeError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode(&frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversize_is_refused_from_the_header_without_reserving() {
        let mut codec = OapCodec::new();
        let mut src = BytesMut::from(&[0x00, 0x10, 0x00, 0x01][..]);
        let before = src.capacity();
        let err = codec.decode(&mut src).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { len: 1_048_577, max: MAX_FRAME }));
        assert_eq!((err.code(), err.is_fatal()), (413, true));
        assert_eq!(src.capacity(), before);
    }

    #[test]
    fn zero_length_is_fatal_bad_request() {
        let err = OapCodec::new().decode(&mut BytesMut::from(&[0u8, 0, 0, 0][..])).unwrap_err();
        assert_eq!((err.code(), err.is_fatal()), (400, true));
    }

    #[test]
    fn encoder_refuses_oversize_and_writes_nothing() {
        let mut codec = OapCodec::with_max_frame(1024);
        let mut dst = BytesMut::new();
        let err = codec.encode(Frame::data(vec![0u8; 1024]), &mut dst).unwrap_err();
        assert!(matches!(err, EncodeError::TooLarge { len: 1025, max: 1024 }));
        assert!(dst.is_empty());
        codec.encode(Frame::data(vec![0u8; 1023]), &mut dst).unwrap();
        assert_eq!(dst.len(), 4 + 1024);
    }

    #[test]
    fn unknown_kind_consumes_its_frame_and_decoding_continues() {
        let mut codec = OapCodec::new();
        let mut src = BytesMut::from(&[0, 0, 0, 2, 0x7f, 0xaa, 0, 0, 0, 2, 0x01, 0x42][..]);
        let err = codec.decode(&mut src).unwrap_err();
        assert!(matches!(err, DecodeError::UnknownKind { kind: 0x7f }));
        assert_eq!((err.code(), err.is_fatal()), (415, false));
        assert_eq!(codec.decode(&mut src).unwrap(), Some(Frame::data(&b"\x42"[..])));
    }

    #[test]
    fn payload_is_a_slice_of_the_read_buffer() {
        let mut src = BytesMut::from(&[0, 0, 0, 4, 0x01, 1, 2, 3][..]);
        let base = src.as_ptr() as usize;
        let Some(Frame::Data(payload)) = OapCodec::new().decode(&mut src).unwrap() else { panic!("not DATA") };
        assert_eq!(payload.as_ptr() as usize, base + 5);
    }
}
