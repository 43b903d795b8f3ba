//! Images in: the committed photos decode; bad images are refused with the
//! right error before any large allocation; sharpness prefers a focused
//! frame; the frame store hands out the sharpest recent one; an image
//! folder cycles as a camera would.

use image::RgbImage;
use seer_platform::frames::{
    DEFAULT_MAX_PIXELS, Frame, FrameEvent, FrameStore, ImageError, ImageSource, decode, load,
    sharpness,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn photos() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/images")
}

#[test]
fn the_photos_decode_at_their_size() {
    let a = load(&photos().join("astronaut_portrait.jpg"), DEFAULT_MAX_PIXELS).expect("jpeg");
    assert_eq!(a.dimensions(), (180, 320));
    let c = load(&photos().join("coffee_landscape.jpg"), DEFAULT_MAX_PIXELS).expect("jpeg");
    assert_eq!(c.dimensions(), (400, 264));
    // Not black: real pixels came out.
    assert!(c.pixels().map(|p| p[0] as u64).sum::<u64>() > 400 * 264 * 20);
}

#[test]
fn a_truncated_jpeg_is_corrupt() {
    let bytes = std::fs::read(photos().join("coffee_landscape.jpg")).expect("read");
    let e = match decode(&bytes[..bytes.len() / 3], "cut.jpg", DEFAULT_MAX_PIXELS) {
        Ok(img) => panic!("a third of a JPEG decoded as {:?}", img.dimensions()),
        Err(e) => e,
    };
    assert!(matches!(e, ImageError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("cut.jpg"), "{e}");
}

/// A PNG whose header claims 100000×100000 (10 gigapixels, 30 GB as RGB;
/// made by `tests/fixtures/images/make_bomb_png.py`): refused from the
/// header alone, quickly and without allocating.
#[test]
fn a_decompression_bomb_is_refused_from_its_header() {
    let png = std::fs::read(photos().join("bomb.png")).expect("bomb.png");
    let t0 = Instant::now();
    let e = match decode(&png, "bomb.png", DEFAULT_MAX_PIXELS) {
        Ok(img) => panic!("a bomb decoded as {:?}", img.dimensions()),
        Err(e) => e,
    };
    match &e {
        ImageError::TooLarge { width, height, .. } => {
            assert_eq!((*width, *height), (100_000, 100_000))
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("10000000000 pixels"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}

#[test]
fn text_is_not_an_image() {
    let e = decode(
        b"What is the capital of France?\n",
        "notes.txt",
        DEFAULT_MAX_PIXELS,
    )
    .expect_err("text");
    assert!(matches!(e, ImageError::Unsupported { .. }), "{e}");
    let e = load(&photos().join("missing.jpg"), DEFAULT_MAX_PIXELS).expect_err("missing");
    assert!(matches!(e, ImageError::Io { .. }), "{e}");
}

#[test]
fn a_blurred_frame_is_less_sharp_and_the_store_prefers_the_sharp_one() {
    let c = load(&photos().join("coffee_landscape.jpg"), DEFAULT_MAX_PIXELS).expect("jpeg");
    let blurred: RgbImage = image::imageops::blur(&c, 3.0);
    let (s, b) = (sharpness(&c), sharpness(&blurred));
    assert!(s > 4.0 * b, "sharp {s} vs blurred {b}");

    let mut store = FrameStore::new(4);
    store.push(Frame::new(blurred.clone(), 0));
    store.push(Frame::new(c.clone(), 1));
    store.push(Frame::new(blurred.clone(), 2));
    assert_eq!(store.latest().map(|f| f.seq), Some(2));
    assert_eq!(
        store.sharpest(Duration::from_secs(5)).map(|f| f.seq),
        Some(1)
    );
    // Capacity: the sharp frame ages out.
    for seq in 3..7 {
        store.push(Frame::new(blurred.clone(), seq));
    }
    assert_eq!(
        store.sharpest(Duration::from_secs(5)).map(|f| f.seq),
        Some(6)
    );
    store.clear();
    assert!(store.latest().is_none());
}

#[test]
fn an_image_folder_cycles_like_a_camera() {
    let (tx, rx) = std::sync::mpsc::sync_channel(16);
    let src = ImageSource::start(&photos(), 20.0, DEFAULT_MAX_PIXELS, tx).expect("source");
    let (mut sizes, mut errors) = (Vec::new(), Vec::new());
    while sizes.len() < 4 {
        match rx.recv_timeout(Duration::from_secs(10)).expect("frame") {
            FrameEvent::Frame(f) => sizes.push(f.image.dimensions()),
            FrameEvent::Error(e) => errors.push(e),
        }
    }
    // Sorted by name: astronaut, (bomb.png: refused, skipped), coffee, …
    assert_eq!(sizes, [(180, 320), (400, 264), (180, 320), (400, 264)]);
    assert!(!errors.is_empty(), "the bomb was not reported");
    assert!(
        errors
            .iter()
            .all(|e| e.contains("bomb.png") && e.contains("pixels")),
        "{errors:?}"
    );
    drop(src);
    // An empty folder is refused by name.
    let empty = tempfile::tempdir().expect("tempdir");
    let (tx, _rx) = std::sync::mpsc::sync_channel(1);
    let e = ImageSource::start(empty.path(), 5.0, DEFAULT_MAX_PIXELS, tx).expect_err("empty");
    assert!(e.to_string().contains("no images"), "{e}");
}
