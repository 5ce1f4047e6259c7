//! Frame I/O over any async stream.

use bytes::BytesMut;
use swarmfs_proto::{Frame, MAX_FRAME_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::NetError;

/// Largest frame accepted before the membership proof has been checked. A hello or hello
/// reply is well under 200 bytes; anyone can send one, so it must not cost more than this.
pub const HANDSHAKE_FRAME_MAX: u32 = 4096;

/// Reads one frame; `Ok(None)` on a clean end of stream between frames. The length is
/// checked against the cap before the body buffer is allocated.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, NetError> {
    read_frame_within(r, MAX_FRAME_LEN).await
}

/// [`read_frame`] with a tighter cap, for the handshake.
pub async fn read_frame_within<R: AsyncRead + Unpin>(r: &mut R, max: u32) -> Result<Option<Frame>, NetError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = Frame::check_len_within(u32::from_be_bytes(len), max)?;
    let mut body = BytesMut::with_capacity(n);
    while body.len() < n {
        let want = (n - body.len()) as u64;
        if (&mut *r).take(want).read_buf(&mut body).await? == 0 {
            return Err(NetError::Closed);
        }
    }
    Ok(Some(Frame::decode_body(body.freeze())?))
}

/// Writes one frame without copying its payload; the caller flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<(), NetError> {
    w.write_all(&f.header()?).await?;
    w.write_all(&f.meta).await?;
    w.write_all(&f.payload).await?;
    Ok(())
}
