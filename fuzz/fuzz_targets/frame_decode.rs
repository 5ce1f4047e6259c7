//! Any bytes after a length prefix: decoding never panics, and what decodes re-encodes to
//! the same bytes; the metadata of a decoded frame never panics the message decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmfs_proto::{Event, Frame, Hello, HelloReply, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok(len) = Frame::check_len(data.len() as u32) {
        assert_eq!(len, data.len());
    }
    if let Ok(f) = Frame::decode_body(bytes::Bytes::copy_from_slice(data)) {
        let again = f.to_bytes().expect("a decoded frame re-encodes");
        assert_eq!(&again[4..], data);
        let _ = f.decode_meta::<Request>();
        let _ = f.decode_meta::<Response>();
        let _ = f.decode_meta::<Event>();
        let _ = f.decode_meta::<swarmfs_proto::HelloVersion>();
        let _ = f.decode_meta::<Hello>();
        let _ = f.decode_meta::<HelloReply>();
    }
});
