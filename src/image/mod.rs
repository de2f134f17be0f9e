//! Pixel conversions shared by capture (which delivers raw formats) and
//! inference (which reads them straight into a model's input): YUYV → RGB.

pub mod yuyv;
