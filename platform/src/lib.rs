//! `seer-platform`: Seer's devices, turned into plain data for the
//! pipelines (16 kHz mono `f32` frames for audio, RGB images for vision).
//!
//! - [`audio`]: audio in any rate, channel count and sample format, made 16
//!   kHz mono; [`audio::WavSource`] plays a WAV file as a stream of frames,
//!   in real time or as fast as possible, so tests and `seer transcribe`
//!   exercise the same path as the microphone.
//! - [`mic`]: the microphone (cpal), with device errors reported as events
//!   and capture restarted when the device comes back.
//! - [`speaker`]: playback (cpal) of mono audio at any rate, resampled to
//!   the device, with a bounded queue and a click-free flush.
//! - [`frames`]: images decoded safely (pixel count checked before any
//!   decoding), scored for sharpness, kept in a [`frames::FrameStore`];
//!   [`frames::ImageSource`] is a camera made of image files.
//! - [`camera`]: a real camera through nokhwa (V4L2), frames decoded to RGB,
//!   loss reported and the device reopened when it returns.
//!
//! `platform` never depends on `models` or on anything above it.

pub mod audio;
pub mod camera;
pub mod frames;
pub mod mic;
pub mod speaker;
