//! Commands to a device: the Modbus write for a command point, and what an operator may type.

use thiserror::Error;

use crate::site::{Format, Point, PointKind, Table, WordOrder};
use crate::state::points::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    Coil { address: u16, value: bool },
    Registers { address: u16, values: Vec<u16> },
}

#[derive(Debug, Clone, PartialEq, Error)]
pub(crate) enum CommandError {
    #[error("{0:?} points are read, not commanded")]
    NotACommand(PointKind),
    #[error("a {kind:?} point cannot be written in the {table:?} table")]
    WrongTable { kind: PointKind, table: Table },
    #[error("a {kind:?} point does not take the value {value:?}")]
    WrongValue { kind: PointKind, value: Value },
    #[error("a double command is on (2) or off (1), not {0}")]
    DoubleState(u8),
    #[error("setpoint {0} is not a finite number")]
    NotFinite(f64),
    #[error("setpoint {value} is {raw} on the device, outside what {format:?} holds")]
    OutOfRange {
        value: f64,
        raw: f64,
        format: Format,
    },
    #[error("{text:?} is not a {kind:?} value; use one of: {accepted}")]
    Word {
        text: String,
        kind: PointKind,
        accepted: &'static str,
    },
    #[error("{0:?} is not a number")]
    Number(String),
}

pub(crate) fn encode(point: &Point, value: &Value) -> Result<Write, CommandError> {
    let (kind, table) = (*point.kind.get_ref(), point.modbus_table());
    let wanted = match kind {
        PointKind::SingleCommand | PointKind::DoubleCommand => Table::Coil,
        PointKind::Setpoint => Table::Holding,
        _ => return Err(CommandError::NotACommand(kind)),
    };
    if table != wanted {
        return Err(CommandError::WrongTable { kind, table });
    }
    let address = point.modbus_address();
    match (kind, *value) {
        (PointKind::SingleCommand, Value::Single(value)) => Ok(Write::Coil { address, value }),
        (PointKind::DoubleCommand, Value::Double(2)) => Ok(Write::Coil {
            address,
            value: true,
        }),
        (PointKind::DoubleCommand, Value::Double(1)) => Ok(Write::Coil {
            address,
            value: false,
        }),
        (PointKind::DoubleCommand, Value::Double(state)) => Err(CommandError::DoubleState(state)),
        (PointKind::Setpoint, Value::Measured(v)) => Ok(Write::Registers {
            address,
            values: setpoint(point, v)?,
        }),
        (kind, value) => Err(CommandError::WrongValue { kind, value }),
    }
}

/// The registers for `value` in engineering units: the inverse of decoding.
fn setpoint(point: &Point, value: f64) -> Result<Vec<u16>, CommandError> {
    if !value.is_finite() {
        return Err(CommandError::NotFinite(value));
    }
    let format = point.format.as_ref().map_or(Format::U16, |f| *f.get_ref());
    let raw = (value - point.offset) / point.scale;
    let out_of_range = CommandError::OutOfRange { value, raw, format };
    if !raw.is_finite() {
        return Err(out_of_range);
    }
    // The cast saturates, so a value far out of range still fails the conversion below.
    let int = raw.round() as i64;
    let words = match format {
        Format::U16 => vec![u16::try_from(int).map_err(|_| out_of_range)?],
        Format::I16 => vec![i16::try_from(int).map_err(|_| out_of_range)? as u16],
        Format::U32 => split(
            u32::try_from(int).map_err(|_| out_of_range)?,
            point.word_order,
        ),
        Format::I32 => split(
            i32::try_from(int).map_err(|_| out_of_range)? as u32,
            point.word_order,
        ),
        Format::F32 => {
            let f = raw as f32;
            if !f.is_finite() {
                return Err(out_of_range);
            }
            split(f.to_bits(), point.word_order)
        }
    };
    Ok(words)
}

fn split(bits: u32, order: WordOrder) -> Vec<u16> {
    let (high, low) = ((bits >> 16) as u16, bits as u16);
    match order {
        WordOrder::Big => vec![high, low],
        WordOrder::Little => vec![low, high],
    }
}

const SINGLE_WORDS: &str = "on, off, true, false, 1, 0";
const DOUBLE_WORDS: &str = "on, off, close, open";

/// What an operator typed for `fepha point write POINT VALUE`. A setpoint is also checked
/// against its format here, so that a value the device cannot hold is refused at once.
pub(crate) fn parse_value(point: &Point, text: &str) -> Result<Value, CommandError> {
    let kind = *point.kind.get_ref();
    let word = text.trim().to_ascii_lowercase();
    let unknown = |accepted| CommandError::Word {
        text: text.to_string(),
        kind,
        accepted,
    };
    match kind {
        PointKind::SingleCommand => match word.as_str() {
            "on" | "true" | "1" => Ok(Value::Single(true)),
            "off" | "false" | "0" => Ok(Value::Single(false)),
            _ => Err(unknown(SINGLE_WORDS)),
        },
        PointKind::DoubleCommand => match word.as_str() {
            "on" | "close" => Ok(Value::Double(2)),
            "off" | "open" => Ok(Value::Double(1)),
            _ => Err(unknown(DOUBLE_WORDS)),
        },
        PointKind::Setpoint => {
            let v: f64 = word
                .parse()
                .map_err(|_| CommandError::Number(text.to_string()))?;
            let value = Value::Measured(v);
            encode(point, &value)?;
            Ok(value)
        }
        _ => Err(CommandError::NotACommand(kind)),
    }
}

#[cfg(test)]
mod tests {
    use toml::Spanned;

    use super::*;
    use crate::acquisition::decode::decode;
    use crate::acquisition::reads::tests::point;
    use crate::acquisition::reads::{Data, Image, Read};

    fn setpoint_point(format: Option<Format>, order: WordOrder, scale: f64, offset: f64) -> Point {
        let mut p = point(PointKind::Setpoint, Table::Holding, 40, format);
        p.word_order = order;
        p.scale = scale;
        p.offset = offset;
        p
    }

    /// Decodes what `encode` wrote, as a measured point of the same layout would read it.
    fn read_back(p: &Point, write: Write) -> Value {
        let Write::Registers { address, values } = write else {
            panic!("a setpoint writes registers");
        };
        let mut image = Image::default();
        let read = Read {
            table: Table::Holding,
            start: address,
            count: values.len() as u16,
        };
        image.insert(read, Data::Registers(values));
        let mut measured = p.clone();
        measured.kind = Spanned::new(0..0, PointKind::Measured);
        decode(&measured, &image).expect("decodes")
    }

    #[test]
    fn setpoints_round_trip_in_every_format_and_word_order() {
        let cases = [
            (None, 123.0),
            (Some(Format::U16), 6553.5),
            (Some(Format::I16), -3276.8),
            (Some(Format::U32), 429_496_729.5),
            (Some(Format::I32), -214_748_364.8),
            (Some(Format::F32), 1.5),
        ];
        for order in [WordOrder::Big, WordOrder::Little] {
            for (format, v) in cases {
                let p = setpoint_point(format, order, 0.1, 0.0);
                let write = encode(&p, &Value::Measured(v)).expect("encodes");
                let Value::Measured(back) = read_back(&p, write) else {
                    panic!("a measured value");
                };
                assert!(
                    (back - v).abs() < 1e-6,
                    "{format:?} {order:?}: {v} -> {back}"
                );
            }
        }
        let p = setpoint_point(Some(Format::F32), WordOrder::Little, 1.0, 0.0);
        assert_eq!(
            encode(&p, &Value::Measured(1.5)),
            Ok(Write::Registers {
                address: 40,
                values: vec![0x0000, 0x3FC0]
            })
        );
        let p = setpoint_point(Some(Format::I16), WordOrder::Big, 0.5, 10.0);
        assert_eq!(
            encode(&p, &Value::Measured(9.5)),
            Ok(Write::Registers {
                address: 40,
                values: vec![0xFFFF]
            })
        );
    }

    #[test]
    fn setpoints_out_of_range_or_not_finite_are_refused() {
        let p = setpoint_point(None, WordOrder::Big, 1.0, 0.0);
        assert!(encode(&p, &Value::Measured(65535.4)).is_ok());
        for v in [65535.6, -0.6, f64::NAN, f64::INFINITY, 1e300] {
            let err = encode(&p, &Value::Measured(v)).expect_err("refused");
            assert!(
                matches!(
                    err,
                    CommandError::OutOfRange { .. } | CommandError::NotFinite(_)
                ),
                "{v}: {err}"
            );
        }
        let i16 = setpoint_point(Some(Format::I16), WordOrder::Big, 1.0, 0.0);
        assert!(encode(&i16, &Value::Measured(-32768.0)).is_ok());
        assert!(encode(&i16, &Value::Measured(32768.0)).is_err());
        let f32 = setpoint_point(Some(Format::F32), WordOrder::Big, 1.0, 0.0);
        assert!(encode(&f32, &Value::Measured(1e39)).is_err());
        let zero_scale = setpoint_point(None, WordOrder::Big, 0.0, 0.0);
        assert!(encode(&zero_scale, &Value::Measured(1.0)).is_err());
    }

    #[test]
    fn coils_and_wrong_combinations() {
        let single = point(PointKind::SingleCommand, Table::Coil, 5, None);
        assert_eq!(
            encode(&single, &Value::Single(true)),
            Ok(Write::Coil {
                address: 5,
                value: true
            })
        );
        let double = point(PointKind::DoubleCommand, Table::Coil, 6, None);
        let coil = |value| Ok(Write::Coil { address: 6, value });
        assert_eq!(encode(&double, &Value::Double(2)), coil(true));
        assert_eq!(encode(&double, &Value::Double(1)), coil(false));
        assert_eq!(
            encode(&double, &Value::Double(3)),
            Err(CommandError::DoubleState(3))
        );
        assert_eq!(
            encode(&double, &Value::Double(0)),
            Err(CommandError::DoubleState(0))
        );
        assert!(matches!(
            encode(&double, &Value::Single(true)),
            Err(CommandError::WrongValue { .. })
        ));
        let measured = point(PointKind::Measured, Table::Holding, 0, None);
        assert!(matches!(
            encode(&measured, &Value::Measured(1.0)),
            Err(CommandError::NotACommand(PointKind::Measured))
        ));
        let misplaced = point(PointKind::Setpoint, Table::Coil, 0, None);
        assert!(matches!(
            encode(&misplaced, &Value::Measured(1.0)),
            Err(CommandError::WrongTable { .. })
        ));
    }

    #[test]
    fn operator_words() {
        let single = point(PointKind::SingleCommand, Table::Coil, 0, None);
        for (text, b) in [
            ("on", true),
            ("TRUE", true),
            (" 1 ", true),
            ("off", false),
            ("false", false),
            ("0", false),
        ] {
            assert_eq!(parse_value(&single, text), Ok(Value::Single(b)));
        }
        let err = parse_value(&single, "close").expect_err("not a single word");
        assert!(err.to_string().contains(SINGLE_WORDS), "{err}");

        let double = point(PointKind::DoubleCommand, Table::Coil, 0, None);
        for (text, dpi) in [("on", 2), ("Close", 2), ("off", 1), ("open", 1)] {
            assert_eq!(parse_value(&double, text), Ok(Value::Double(dpi)));
        }
        let err = parse_value(&double, "1").expect_err("not a double word");
        assert!(err.to_string().contains(DOUBLE_WORDS), "{err}");

        let sp = setpoint_point(Some(Format::I16), WordOrder::Big, 0.1, 0.0);
        assert_eq!(parse_value(&sp, "-12.5"), Ok(Value::Measured(-12.5)));
        assert_eq!(
            parse_value(&sp, "twelve"),
            Err(CommandError::Number("twelve".into()))
        );
        assert!(matches!(
            parse_value(&sp, "NaN"),
            Err(CommandError::NotFinite(_))
        ));
        assert!(matches!(
            parse_value(&sp, "5000"),
            Err(CommandError::OutOfRange { .. })
        ));
    }
}
