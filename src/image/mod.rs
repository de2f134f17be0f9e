//! Image formats, whatever model the pixels are for, shared by capture
//! (which delivers raw and encoded formats) and inference (which reads them
//! into a model's input): recognising and decoding encoded images (JPEG, PNG,
//! BMP), repairing MJPEG frames that lack Huffman tables, and YUYV and YUV
//! 4:2:0 (I420, NV12) → RGB, and the small luma images motion detection
//! compares (`luma`, issue 18) and the focus figure is measured on
//! (`focus`, issue 20), and privacy masks (`mask`, issue 23).

pub(crate) mod decode;
pub(crate) mod encode;
// The focus figure of a frame (issue 20, web page).
pub(crate) mod focus;
pub(crate) mod luma;
// Privacy masks (issue 23).
pub(crate) mod mask;
pub(crate) mod mjpeg;
pub(crate) mod yuv420;
pub(crate) mod yuyv;
