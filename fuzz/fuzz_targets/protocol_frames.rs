//! Frames a hostile guest agent (or a confused supervisor client) can send: the length-delimited
//! codec, the 8-byte id header the supervisor reads and rewrites without decoding, the bounds
//! walk (`check_bounds`) that runs before any body is decoded, and MessagePack decoding of every
//! frame type either side accepts (`Response` holds the fs, shell and service answers). Nothing
//! may panic, and whatever decodes must encode and decode again to the same id.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pyro_protocol::{
    check_bounds, decode, encode, frame_id, request_type, set_frame_id, Frame, FrameId, RequestFrame, ResponseFrame,
};
use tokio_util::codec::Decoder;

fn frame(buf: &[u8]) {
    // The supervisor's routing path: read the id, rewrite it, never look at the body.
    let id = frame_id(buf);
    let mut copy = buf.to_vec();
    assert_eq!(set_frame_id(&mut copy, 7), id.is_some());
    if id.is_some() {
        assert_eq!(frame_id(&copy), Some(7));
        assert_eq!(copy[8..], buf[8..]);
        let _ = check_bounds(&buf[8..]);
        // The supervisor's forwarding decision reads the request tag of any client's bytes.
        let _ = request_type(&buf[8..]);
    }
    let _ = decode::<FrameId>(buf);
    if let Ok(frame) = decode::<ResponseFrame>(buf) {
        let again = encode(&frame).expect("a decoded response encodes");
        let back: ResponseFrame = decode(&again).expect("an encoded response decodes");
        assert_eq!(back.id, frame.id);
        // The agent's one-buffer wire form is the codec's length prefix + the same bytes.
        if let Ok(wire) = frame.encode_wire() {
            assert_eq!(u32::from_be_bytes(wire[..4].try_into().unwrap()) as usize, again.len());
            assert_eq!(&wire[4..], &again[..]);
        }
    }
    if let Ok(frame) = decode::<RequestFrame>(buf) {
        let again = encode(&frame).expect("a decoded request encodes");
        let back: RequestFrame = decode(&again).expect("an encoded request decodes");
        assert_eq!(back.id, frame.id);
    }
}

fuzz_target!(|data: &[u8]| {
    // The input as one frame, and as a byte stream cut into frames by the codec.
    frame(data);
    let mut codec = pyro_protocol::codec();
    let mut stream = BytesMut::from(data);
    loop {
        match codec.decode(&mut stream) {
            Ok(Some(f)) => frame(&f),
            Ok(None) | Err(_) => break,
        }
    }
});
