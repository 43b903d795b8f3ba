//! Entry points for the fuzz targets that need this crate's private
//! readers. `tests/tests/fuzz.rs` feeds every target a committed corpus and
//! seeded mutations of it in CI; `fuzz/` runs the same targets under
//! libFuzzer. Each accepts any bytes and must return, never panic.

use crate::error::{ModelError, Result};
use safetensors::SafeTensors;

/// A safetensors file as the HF loader reads it: the header, then every
/// tensor converted to f32. Returns the values read.
pub fn safetensors(bytes: &[u8]) -> Result<usize> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| ModelError::Tensor {
        path: "(fuzz)".into(),
        name: "(header)".into(),
        reason: e.to_string(),
    })?;
    let mut n = 0;
    for (_, view) in st.tensors() {
        if let Ok(v) = crate::weights::view_f32(&view) {
            n += v.len();
        }
    }
    Ok(n)
}
