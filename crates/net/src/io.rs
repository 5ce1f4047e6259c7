//! Frame I/O over any async stream.

use bytes::Bytes;
use swarmfs_proto::{Frame, FrameKind, FIXED_HEADER_LEN, MAX_FRAME_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::beside::{Beside, BESIDE_FROM};
use crate::NetError;

/// Largest frame accepted before the membership proof has been checked. A hello or hello
/// reply is well under 200 bytes; anyone can send one, so it must not cost more than this.
pub const HANDSHAKE_FRAME_MAX: u32 = 4096;

/// Reads one frame; `Ok(None)` on a clean end of stream between frames. The length is
/// checked against the cap before the body buffer is allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, NetError> {
    read_frame_beside(r, MAX_FRAME_LEN, None).await
}

/// [`read_frame`] with a tighter cap, for the handshake.
pub async fn read_frame_within<R: AsyncRead + Unpin>(r: &mut R, max: u32) -> Result<Option<Frame>, NetError> {
    read_frame_beside(r, max, None).await
}

/// [`read_frame`] on a connection whose payloads may come beside TLS (see [`crate::beside`]).
pub async fn read_frame_beside<R: AsyncRead + Unpin>(
    r: &mut R,
    max: u32,
    beside: Option<&Beside>,
) -> Result<Option<Frame>, NetError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = Frame::check_len_within(u32::from_be_bytes(len), max)?;
    let mut head = [0u8; FIXED_HEADER_LEN];
    r.read_exact(&mut head).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => NetError::Closed,
        _ => e.into(),
    })?;
    let (kind, id, meta_len, came_beside) = Frame::decode_header(&head, n)?;
    let meta = read_exactly(r, meta_len, 1).await?;
    if came_beside {
        let malformed = swarmfs_proto::ProtoError::Malformed("a frame without the payload it says came beside it");
        if n != FIXED_HEADER_LEN + meta_len {
            return Err(malformed.into());
        }
        let payload = beside.and_then(Beside::take).ok_or(malformed)?;
        return Ok(Some(Frame { kind, id, meta, payload, beside: true }));
    }
    let len = n - FIXED_HEADER_LEN - meta_len;
    // A response's payload in an allocation of its own, starting at its start: a chunk taken
    // out of it as a Vec (to verify and decrypt in place) is not moved. A request's big
    // payload (a chunk a peer is asked to store) starts on a block boundary instead, so the
    // peer writes it to disk straight from there (direct I/O needs aligned memory).
    let align = if kind == FrameKind::Request && len >= ALIGNED_FROM { BLOCK } else { 1 };
    let payload = read_exactly(r, len, align).await?;
    Ok(Some(Frame { kind, id, meta, payload, beside: false }))
}

/// Request payloads at least this long are read into block-aligned memory.
const ALIGNED_FROM: usize = 64 << 10;
/// The alignment direct I/O needs (see `swarmfs_core::direct`).
const BLOCK: usize = 4096;

/// Reads exactly `len` bytes into an allocation of their own that starts them at a multiple
/// of `align` (1: at its start, and it holds just those bytes).
async fn read_exactly<R: AsyncRead + Unpin>(r: &mut R, len: usize, align: usize) -> Result<Bytes, NetError> {
    // The capacity never grows (reads stop at `len`), so the start stays where it was put.
    let mut buf: Vec<u8> = Vec::with_capacity(len + align - 1);
    let start = buf.as_ptr().align_offset(align);
    buf.resize(start, 0);
    while buf.len() < start + len {
        let want = (start + len - buf.len()) as u64;
        if (&mut *r).take(want).read_buf(&mut buf).await? == 0 {
            return Err(NetError::Closed);
        }
    }
    Ok(match start {
        0 => Bytes::from(buf),
        _ => Bytes::from(buf).slice(start..),
    })
}

/// Writes one frame without copying its payload; the caller flushes. Its payload goes
/// inside it, whatever `f.beside` says.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), NetError> {
    let inside;
    let f = match f.beside {
        true => {
            inside = Frame { beside: false, ..f.clone() };
            &inside
        }
        false => f,
    };
    w.write_all(&f.header()?).await?;
    w.write_all(&f.meta).await?;
    w.write_all(&f.payload).await?;
    Ok(())
}

/// Writes one frame on a connection whose payloads may go beside TLS: a frame that allows
/// it and is big enough sends its payload as a unit first (see [`crate::beside`]).
pub async fn write_frame_beside<W: AsyncWrite + Unpin>(
    w: &mut W,
    f: &Frame,
    beside: Option<&Beside>,
) -> Result<(), NetError> {
    let Some(beside) = beside.filter(|b| f.beside && f.payload.len() >= BESIDE_FROM && b.enabled()) else {
        return write_frame(w, f).await;
    };
    // Everything written before is on the stream ahead of the unit.
    w.flush().await?;
    // A request's chunk is written to disk by the peer straight from where it lands.
    beside.send(f.payload.clone(), f.kind == FrameKind::Request && f.payload.len() >= ALIGNED_FROM);
    w.write_all(&f.header()?).await?;
    w.write_all(&f.meta).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use swarmfs_proto::{ChunkId, Request};

    #[tokio::test]
    async fn a_big_request_payload_arrives_block_aligned_and_intact_and_a_response_payload_intact() {
        let payload: Vec<u8> = (0..ALIGNED_FROM + 4099).map(|i| (i * 31 % 251) as u8).collect();
        let req = Request::PutChunk { chunk: ChunkId([7; 32]) };
        let mut wire = Vec::new();
        for kind in [FrameKind::Request, FrameKind::Response] {
            write_frame(&mut wire, &Frame::new(kind, 1, &req, Bytes::from(payload.clone()))).await.unwrap();
        }
        let mut r = &wire[..];
        let request = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!(request.payload, payload);
        assert_eq!(request.payload.as_ptr().align_offset(BLOCK), 0, "a peer writes it straight to disk");
        let response = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!((response.kind, response.payload), (FrameKind::Response, Bytes::from(payload)));
        assert!(read_frame(&mut r).await.unwrap().is_none());
    }

    /// A frame saying its payload came beside it with no unit before it (or on a connection
    /// with no units), or with bytes inside it as well, is refused: a payload is never taken
    /// from elsewhere or made up.
    #[tokio::test]
    async fn a_frame_flagged_beside_without_its_unit_is_refused() {
        let req = Request::PutChunk { chunk: ChunkId([7; 32]) };
        let flagged = Frame::new(FrameKind::Request, 1, &req, Bytes::new()).sealed_payload();
        let mut wire = flagged.header().unwrap().to_vec();
        wire.extend_from_slice(&flagged.meta);
        let (_, beside) = crate::beside::Wire::new(tokio::io::empty());
        beside.enable();
        for units in [Some(&beside), None] {
            let err = read_frame_beside(&mut &wire[..], MAX_FRAME_LEN, units).await.unwrap_err();
            assert!(matches!(err, NetError::Proto(swarmfs_proto::ProtoError::Malformed(_))), "{err}");
        }
        // Flagged beside, yet carrying bytes inside it: refused before any unit is looked for.
        let mut both = wire.clone();
        let len = u32::from_be_bytes(both[..4].try_into().unwrap()) + 3;
        both[..4].copy_from_slice(&len.to_be_bytes());
        both.extend_from_slice(b"abc");
        let err = read_frame_beside(&mut &both[..], MAX_FRAME_LEN, Some(&beside)).await.unwrap_err();
        assert!(matches!(err, NetError::Proto(swarmfs_proto::ProtoError::Malformed(_))), "{err}");
    }
}
