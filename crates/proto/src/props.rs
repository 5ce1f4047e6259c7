//! Property tests: the frame decoder and the path parser take any bytes a stranger sends
//! without panicking, and what they accept round-trips. Failures proptest finds are kept in
//! `proptest-regressions/props.txt` (committed) and replayed first on every run.

use bytes::Bytes;
use proptest::prelude::*;

use crate::{Frame, FrameKind, RemotePath, MAX_FRAME_LEN};

fn kind() -> impl Strategy<Value = FrameKind> {
    prop_oneof![
        Just(FrameKind::Hello),
        Just(FrameKind::HelloReply),
        Just(FrameKind::Request),
        Just(FrameKind::Response),
        Just(FrameKind::Event),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_frame_body_decodes_or_fails_cleanly(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(f) = Frame::decode_body(Bytes::from(body.clone())) {
            // What decodes re-encodes to the same bytes.
            let again = f.to_bytes().unwrap();
            prop_assert_eq!(&again[4..], &body[..]);
        }
    }

    #[test]
    fn any_length_prefix_is_checked_before_allocating(len in any::<u32>()) {
        match Frame::check_len(len) {
            Ok(n) => prop_assert!((13..=MAX_FRAME_LEN).contains(&(n as u32))),
            Err(_) => prop_assert!(!(13..=MAX_FRAME_LEN).contains(&len)),
        }
    }

    #[test]
    fn frames_round_trip(
        kind in kind(),
        id in any::<u64>(),
        meta in proptest::collection::vec(any::<u8>(), 0..300),
        payload in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let f = Frame { kind, id, meta: Bytes::from(meta), payload: Bytes::from(payload), beside: false };
        let wire = f.to_bytes().unwrap();
        prop_assert_eq!(u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize, wire.len() - 4);
        let back = Frame::decode_body(Bytes::from(wire[4..].to_vec())).unwrap();
        prop_assert_eq!((back.kind, back.id, back.meta, back.payload), (f.kind, f.id, f.meta, f.payload));
    }

    #[test]
    fn any_string_parses_to_a_clean_path_or_is_refused(s in "[a-z./\\x00\\u{1b}\\n]{0,40}|\\PC{0,80}") {
        if let Ok(p) = RemotePath::parse(&s) {
            let text = p.to_string();
            prop_assert!(text.starts_with('/'));
            prop_assert!(!text.contains('\0'));
            prop_assert!(text == "/" || !text.ends_with('/'));
            prop_assert!(!text.contains("//"));
            prop_assert!(text.split('/').all(|n| n != "." && n != ".."));
            // Normal form is a fixed point.
            prop_assert_eq!(RemotePath::parse(&text).unwrap(), p);
        }
    }
}
