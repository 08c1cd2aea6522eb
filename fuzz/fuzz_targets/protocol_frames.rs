//! Frames a hostile guest agent (or a confused supervisor client) can send: the length-delimited
//! codec, then MessagePack decoding of every frame type either side accepts. Nothing may panic,
//! and whatever decodes must encode and decode again (the supervisor forwards frames it decoded).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pyro_protocol::{decode, encode, fs, session, FrameId, RequestFrame, ResponseFrame};
use tokio_util::codec::Decoder;

fn frame_body(body: &[u8]) {
    let _ = decode::<FrameId>(body);
    if let Ok(frame) = decode::<ResponseFrame>(body) {
        let again = encode(&frame).expect("a decoded response encodes");
        let back: ResponseFrame = decode(&again).expect("an encoded response decodes");
        assert_eq!(back.id, frame.id);
    }
    if let Ok(frame) = decode::<RequestFrame>(body) {
        let again = encode(&frame).expect("a decoded request encodes");
        let back: RequestFrame = decode(&again).expect("an encoded request decodes");
        assert_eq!(back.id, frame.id);
    }
    let _ = decode::<fs::FsResponse>(body);
    let _ = decode::<session::ShellResponse>(body);
    let _ = decode::<session::ServiceResponse>(body);
}

fuzz_target!(|data: &[u8]| {
    // The input as one frame body, and as a byte stream cut into frames by the codec.
    frame_body(data);
    let mut codec = pyro_protocol::codec();
    let mut stream = BytesMut::from(data);
    loop {
        match codec.decode(&mut stream) {
            Ok(Some(frame)) => frame_body(&frame),
            Ok(None) | Err(_) => break,
        }
    }
});
