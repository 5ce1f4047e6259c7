//! Framing: `u32 len | u8 kind | u64 id | u32 meta_len | meta | payload`, big-endian.
//!
//! `len` counts everything after itself and is checked against [`MAX_FRAME_LEN`] before a
//! byte of the body is allocated. `meta` is a postcard-encoded message; `payload` is raw
//! bytes (chunk data), kept out of serde so it is never copied through it.
//!
//! A frame whose kind byte has [`PAYLOAD_BESIDE`] set has no payload inside it: its payload
//! (a sealed chunk) went just before it, beside TLS (`swarmfs_net::beside`), and `len`
//! counts only the header and metadata.

use bytes::{Buf, Bytes};
use serde::{de::DeserializeOwned, Serialize};

use crate::ProtoError;

/// Largest chunk (64 MiB) plus room for the header and metadata.
pub const MAX_FRAME_LEN: u32 = 64 * 1024 * 1024 + 1024 * 1024;
/// Bytes after the length prefix that every frame has: kind, id, meta_len.
pub const FIXED_HEADER_LEN: usize = 1 + 8 + 4;
/// Set in the kind byte of a frame whose payload went beside it (protocol 9).
pub const PAYLOAD_BESIDE: u8 = 0x80;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    Hello = 0,
    HelloReply = 1,
    Request = 2,
    Response = 3,
    Event = 4,
}

impl TryFrom<u8> for FrameKind {
    type Error = ProtoError;
    fn try_from(b: u8) -> Result<Self, ProtoError> {
        Ok(match b {
            0 => FrameKind::Hello,
            1 => FrameKind::HelloReply,
            2 => FrameKind::Request,
            3 => FrameKind::Response,
            4 => FrameKind::Event,
            _ => return Err(ProtoError::Malformed("unknown frame kind")),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    /// Request id; a response carries its request's id. Zero for hello and events.
    pub id: u64,
    pub meta: Bytes,
    pub payload: Bytes,
    /// The payload goes (or came) beside TLS rather than inside the frame.
    pub beside: bool,
}

impl Frame {
    pub fn new<T: Serialize>(kind: FrameKind, id: u64, meta: &T, payload: Bytes) -> Self {
        let meta = postcard::to_stdvec(meta).expect("postcard encoding into a Vec cannot fail");
        Frame { kind, id, meta: meta.into(), payload, beside: false }
    }

    pub fn decode_meta<T: DeserializeOwned>(&self) -> Result<T, ProtoError> {
        postcard::from_bytes(&self.meta).map_err(|e| ProtoError::Decode(e.to_string()))
    }

    /// Total length written to the wire, prefix included.
    pub fn wire_len(&self) -> usize {
        4 + FIXED_HEADER_LEN + self.meta.len() + self.payload.len()
    }

    /// A frame whose payload may go beside TLS, where the connection allows it: a whole
    /// sealed chunk, which its receiver checks against its id.
    pub fn sealed_payload(mut self) -> Self {
        self.beside = true;
        self
    }

    /// The length prefix and fixed header, to be followed by `meta` and `payload` (by
    /// `meta` alone when the payload goes beside).
    pub fn header(&self) -> Result<[u8; 4 + FIXED_HEADER_LEN], ProtoError> {
        let inside = if self.beside { 0 } else { self.payload.len() };
        let body_len = FIXED_HEADER_LEN + self.meta.len() + inside;
        if body_len > MAX_FRAME_LEN as usize {
            return Err(ProtoError::FrameTooLarge { len: body_len as u64, max: MAX_FRAME_LEN as u64 });
        }
        let mut h = [0u8; 4 + FIXED_HEADER_LEN];
        h[0..4].copy_from_slice(&(body_len as u32).to_be_bytes());
        h[4] = self.kind as u8 | if self.beside { PAYLOAD_BESIDE } else { 0 };
        h[5..13].copy_from_slice(&self.id.to_be_bytes());
        h[13..17].copy_from_slice(&(self.meta.len() as u32).to_be_bytes());
        Ok(h)
    }

    /// Whole frame as one buffer, its payload inside (tests and small control messages).
    pub fn to_bytes(&self) -> Result<Vec<u8>, ProtoError> {
        if self.beside {
            return Frame { beside: false, ..self.clone() }.to_bytes();
        }
        let mut out = Vec::with_capacity(self.wire_len());
        out.extend_from_slice(&self.header()?);
        out.extend_from_slice(&self.meta);
        out.extend_from_slice(&self.payload);
        Ok(out)
    }

    /// Validates a length prefix before the body is read.
    pub fn check_len(len: u32) -> Result<usize, ProtoError> {
        Self::check_len_within(len, MAX_FRAME_LEN)
    }

    /// Like [`Frame::check_len`] with a tighter cap `max` (the handshake's).
    pub fn check_len_within(len: u32, max: u32) -> Result<usize, ProtoError> {
        if len > max.min(MAX_FRAME_LEN) {
            return Err(ProtoError::FrameTooLarge { len: len as u64, max: max.min(MAX_FRAME_LEN) as u64 });
        }
        if (len as usize) < FIXED_HEADER_LEN {
            return Err(ProtoError::Malformed("frame shorter than its header"));
        }
        Ok(len as usize)
    }

    /// Parses a body (everything after the length prefix).
    pub fn decode_body(mut body: Bytes) -> Result<Frame, ProtoError> {
        if body.len() < FIXED_HEADER_LEN {
            return Err(ProtoError::Malformed("frame shorter than its header"));
        }
        let (kind, id, meta_len, beside) = Self::decode_header(&body[..FIXED_HEADER_LEN], body.len())?;
        if beside {
            return Err(ProtoError::Malformed("a payload beside TLS where none can be"));
        }
        body.advance(FIXED_HEADER_LEN);
        let meta = body.split_to(meta_len);
        Ok(Frame { kind, id, meta, payload: body, beside: false })
    }

    /// Parses the fixed header (`head`, [`FIXED_HEADER_LEN`] bytes) of a body of `body_len`
    /// bytes: kind, id, the metadata's length, checked to fit, and whether the payload went
    /// beside.
    pub fn decode_header(mut head: &[u8], body_len: usize) -> Result<(FrameKind, u64, usize, bool), ProtoError> {
        if head.len() < FIXED_HEADER_LEN || body_len < FIXED_HEADER_LEN {
            return Err(ProtoError::Malformed("frame shorter than its header"));
        }
        let byte = head.get_u8();
        let beside = byte & PAYLOAD_BESIDE != 0;
        let kind = FrameKind::try_from(byte & !PAYLOAD_BESIDE)?;
        let id = head.get_u64();
        let meta_len = head.get_u32() as usize;
        if meta_len > body_len - FIXED_HEADER_LEN {
            return Err(ProtoError::Malformed("metadata longer than the frame"));
        }
        Ok((kind, id, meta_len, beside))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ChunkId, ErrorCode, Request, Response};

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
    }

    /// Golden bytes: if this changes, old and new nodes can no longer talk. Bump
    /// PROTOCOL_VERSION and record it in docs/wire.md instead of editing the expectation.
    #[test]
    fn golden_get_chunk_request() {
        let req = Request::GetChunk { chunk: ChunkId([0xab; 32]), offset: 1, len: 300 };
        let f = Frame::new(FrameKind::Request, 7, &req, Bytes::new());
        let bytes = f.to_bytes().unwrap();
        let expected = concat!(
            "00 00 00 31 ",             // body length 49
            "02 ",                      // kind Request
            "00 00 00 00 00 00 00 07 ", // request id 7
            "00 00 00 24 ",             // meta length 36
            "13 ",                      // variant 19 GetChunk
            "ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ",
            "ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ab ", // chunk id
            "01 ",                                              // offset 1 (varint)
            "ac 02"                                             // len 300 (varint)
        );
        assert_eq!(hex(&bytes), expected);
    }

    #[test]
    fn golden_put_chunk_carries_raw_payload() {
        let req = Request::PutChunk { chunk: ChunkId([1; 32]) };
        let f = Frame::new(FrameKind::Request, 1, &req, Bytes::from_static(b"xyz"));
        let bytes = f.to_bytes().unwrap();
        assert_eq!(bytes[17], 0x12, "variant 18 PutChunk");
        assert_eq!(&bytes[bytes.len() - 3..], b"xyz", "payload is appended raw");
    }

    #[test]
    fn golden_error_response() {
        let resp = Response::error(ErrorCode::NotFound, "no");
        let meta = postcard::to_stdvec(&resp).unwrap();
        // variant 1 Error, code 0 NotFound, string of length 2
        assert_eq!(hex(&meta), "01 00 02 6e 6f");
    }

    #[test]
    fn round_trip_and_limits() {
        let req = Request::Locate { chunks: vec![ChunkId([9; 32]); 3] };
        let f = Frame::new(FrameKind::Request, u64::MAX, &req, Bytes::from_static(b"p"));
        let bytes = f.to_bytes().unwrap();
        let len = u32::from_be_bytes(bytes[..4].try_into().unwrap());
        assert_eq!(Frame::check_len(len).unwrap(), bytes.len() - 4);
        let back = Frame::decode_body(Bytes::copy_from_slice(&bytes[4..])).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.decode_meta::<Request>().unwrap(), req);

        assert!(Frame::check_len(u32::MAX).is_err());
        assert!(Frame::check_len(3).is_err());
        let mut bad = bytes[4..].to_vec();
        bad[0] = 99;
        assert!(Frame::decode_body(bad.into()).is_err());
        let mut bad = bytes[4..].to_vec();
        bad[9..13].copy_from_slice(&1000u32.to_be_bytes());
        assert!(Frame::decode_body(bad.into()).is_err());
    }
}
