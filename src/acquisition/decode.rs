//! From a poll round's image to point values, and which new values are worth reporting.

use thiserror::Error;

use super::reads::Image;
use crate::site::{Format, Point, PointKind, Table, WordOrder};
use crate::state::points::Value;

#[derive(Debug, Clone, PartialEq, Error)]
pub(crate) enum DecodeError {
    #[error("no data for {table:?} address {address}")]
    Missing { table: Table, address: u16 },
    #[error("the value is not a finite number")]
    NotANumber,
    #[error("{0:?} points are written, not read")]
    NotReadable(PointKind),
    #[error("a {kind:?} point cannot be read from the {table:?} table")]
    WrongTable { kind: PointKind, table: Table },
    #[error("a counter is an integer and cannot be read as f32")]
    FloatCounter,
    #[error("the scaled counter {0} does not fit in 64 bits")]
    CounterOutOfRange(f64),
}

/// The raw reading before scaling.
enum Raw {
    Int(i64),
    Float(f32),
}

pub(crate) fn decode(point: &Point, image: &Image) -> Result<Value, DecodeError> {
    let (kind, table) = (*point.kind.get_ref(), point.modbus_table());
    match kind {
        PointKind::Single if table.is_bits() => {
            Ok(Value::Single(bit(image, table, point.modbus_address())?))
        }
        PointKind::Single => Ok(Value::Single(
            word(image, table, point.modbus_address())? != 0,
        )),
        PointKind::Double if table.is_bits() => {
            let on = bit(image, table, point.modbus_address())?;
            let next = point
                .modbus_address()
                .checked_add(1)
                .ok_or(DecodeError::Missing {
                    table,
                    address: point.modbus_address(),
                })?;
            let off = bit(image, table, next)?;
            Ok(Value::Double((u8::from(on) << 1) | u8::from(off)))
        }
        PointKind::Double => Err(DecodeError::WrongTable { kind, table }),
        PointKind::Measured => {
            let raw = match raw(point, image)? {
                Raw::Int(i) => i as f64,
                Raw::Float(f) => f64::from(f),
            };
            let value = raw * point.scale + point.offset;
            value
                .is_finite()
                .then_some(Value::Measured(value))
                .ok_or(DecodeError::NotANumber)
        }
        PointKind::Counter => {
            let Raw::Int(raw) = raw(point, image)? else {
                return Err(DecodeError::FloatCounter);
            };
            if point.scale == 1.0 && point.offset == 0.0 {
                return Ok(Value::Counter(raw));
            }
            let scaled = (raw as f64 * point.scale + point.offset).round();
            // i64::MAX as f64 is 2^63, itself out of range.
            if scaled >= i64::MIN as f64 && scaled < i64::MAX as f64 {
                Ok(Value::Counter(scaled as i64))
            } else {
                Err(DecodeError::CounterOutOfRange(scaled))
            }
        }
        // Step positions and bitstrings come from 104 devices only (the site check).
        PointKind::SingleCommand
        | PointKind::DoubleCommand
        | PointKind::Setpoint
        | PointKind::Step
        | PointKind::Bitstring => Err(DecodeError::NotReadable(kind)),
    }
}

fn raw(point: &Point, image: &Image) -> Result<Raw, DecodeError> {
    let (table, address) = (point.modbus_table(), point.modbus_address());
    if table.is_bits() {
        return Ok(Raw::Int(i64::from(bit(image, table, address)?)));
    }
    let format = point.format.as_ref().map_or(Format::U16, |f| *f.get_ref());
    let missing = || DecodeError::Missing { table, address };
    let raw = match format {
        Format::U16 => Raw::Int(i64::from(word(image, table, address)?)),
        Format::I16 => Raw::Int(i64::from(word(image, table, address)? as i16)),
        _ => {
            let words = image.registers(table, address, 2).ok_or_else(missing)?;
            let [first, second] = words.as_slice() else {
                return Err(missing());
            };
            let bits = join(*first, *second, point.word_order);
            match format {
                Format::U32 => Raw::Int(i64::from(bits)),
                Format::I32 => Raw::Int(i64::from(bits as i32)),
                _ => {
                    let f = f32::from_bits(bits);
                    if !f.is_finite() {
                        return Err(DecodeError::NotANumber);
                    }
                    Raw::Float(f)
                }
            }
        }
    };
    Ok(raw)
}

/// The 32 bits of two registers in the order they were read.
fn join(first: u16, second: u16, order: WordOrder) -> u32 {
    let (high, low) = match order {
        WordOrder::Big => (first, second),
        WordOrder::Little => (second, first),
    };
    (u32::from(high) << 16) | u32::from(low)
}

fn bit(image: &Image, table: Table, address: u16) -> Result<bool, DecodeError> {
    image
        .bit(table, address)
        .ok_or(DecodeError::Missing { table, address })
}

fn word(image: &Image, table: Table, address: u16) -> Result<u16, DecodeError> {
    image
        .registers(table, address, 1)
        .and_then(|w| w.first().copied())
        .ok_or(DecodeError::Missing { table, address })
}

/// Whether `new` must be reported, given the last value reported (not the last one read, so
/// that a slow drift adds up until it crosses the deadband): None if not, else whether it is
/// an event. Counters are reported on every change but never as events: masters interrogate
/// them.
pub(crate) fn change(point: &Point, last: Option<&Value>, new: &Value) -> Option<bool> {
    let report = match (last, new) {
        (None, _) => true,
        (Some(Value::Measured(last)), Value::Measured(new)) => {
            let deadband = point.deadband.as_ref().map_or(0.0, |d| *d.get_ref());
            // Written so that a NaN on either side is reported rather than stuck forever.
            !(last == new || (new - last).abs() < deadband)
        }
        (Some(last), new) => last != new,
    };
    report.then_some(!matches!(new, Value::Counter(_)))
}

#[cfg(test)]
mod tests {
    use toml::Spanned;

    use super::*;
    use crate::acquisition::reads::tests::point;
    use crate::acquisition::reads::{Data, Read};

    fn registers(table: Table, start: u16, words: &[u16]) -> Image {
        let mut image = Image::default();
        let read = Read {
            table,
            start,
            count: words.len() as u16,
        };
        image.insert(read, Data::Registers(words.to_vec()));
        image
    }

    fn measured(format: Format, order: WordOrder, words: &[u16]) -> Result<Value, DecodeError> {
        let mut p = point(PointKind::Measured, Table::Input, 4, Some(format));
        p.word_order = order;
        decode(&p, &registers(Table::Input, 4, words))
    }

    #[test]
    fn i16_is_signed_and_scaled() {
        let mut p = point(PointKind::Measured, Table::Holding, 0, Some(Format::I16));
        p.scale = 0.1;
        assert_eq!(
            decode(&p, &registers(Table::Holding, 0, &[0xFFFF])),
            Ok(Value::Measured(-0.1))
        );
        p.offset = 100.0;
        p.format = None;
        assert_eq!(
            decode(&p, &registers(Table::Holding, 0, &[0xFFFF])),
            Ok(Value::Measured(65535.0 * 0.1 + 100.0))
        );
    }

    #[test]
    fn u32_and_i32_follow_the_word_order() {
        let words = [0x0001, 0x0002];
        assert_eq!(
            measured(Format::U32, WordOrder::Big, &words),
            Ok(Value::Measured(65538.0))
        );
        assert_eq!(
            measured(Format::U32, WordOrder::Little, &words),
            Ok(Value::Measured(131073.0))
        );
        assert_eq!(
            measured(Format::I32, WordOrder::Little, &[0xFFFE, 0xFFFF]),
            Ok(Value::Measured(-2.0))
        );
    }

    #[test]
    fn f32_follows_the_word_order_and_refuses_nan() {
        assert_eq!(
            measured(Format::F32, WordOrder::Big, &[0x3FC0, 0x0000]),
            Ok(Value::Measured(1.5))
        );
        assert_eq!(
            measured(Format::F32, WordOrder::Little, &[0x0000, 0x3FC0]),
            Ok(Value::Measured(1.5))
        );
        assert_eq!(
            measured(Format::F32, WordOrder::Big, &[0x7FC0, 0x0000]),
            Err(DecodeError::NotANumber)
        );
        assert_eq!(
            measured(Format::F32, WordOrder::Big, &[0x7F80, 0x0000]),
            Err(DecodeError::NotANumber)
        );
    }

    #[test]
    fn short_data_is_missing() {
        let missing = Err(DecodeError::Missing {
            table: Table::Input,
            address: 4,
        });
        assert_eq!(measured(Format::U32, WordOrder::Big, &[1]), missing);
        assert_eq!(measured(Format::U16, WordOrder::Big, &[]), missing);
        let p = point(PointKind::Double, Table::Coil, 7, None);
        let mut image = Image::default();
        let read = Read {
            table: Table::Coil,
            start: 7,
            count: 2,
        };
        image.insert(read, Data::Bits(vec![true]));
        assert_eq!(
            decode(&p, &image),
            Err(DecodeError::Missing {
                table: Table::Coil,
                address: 8
            })
        );
    }

    #[test]
    fn double_point_states() {
        let p = point(PointKind::Double, Table::DiscreteInput, 3, None);
        for (on, off, dpi) in [
            (false, false, 0),
            (false, true, 1),
            (true, false, 2),
            (true, true, 3),
        ] {
            let mut image = Image::default();
            let read = Read {
                table: Table::DiscreteInput,
                start: 3,
                count: 2,
            };
            image.insert(read, Data::Bits(vec![on, off]));
            assert_eq!(decode(&p, &image), Ok(Value::Double(dpi)));
        }
    }

    #[test]
    fn singles_and_counters() {
        let single = point(PointKind::Single, Table::Holding, 0, None);
        assert_eq!(
            decode(&single, &registers(Table::Holding, 0, &[4])),
            Ok(Value::Single(true))
        );
        let mut counter = point(PointKind::Counter, Table::Holding, 0, Some(Format::U32));
        let image = registers(Table::Holding, 0, &[0x0001, 0x0000]);
        assert_eq!(decode(&counter, &image), Ok(Value::Counter(65536)));
        counter.scale = 0.001;
        assert_eq!(decode(&counter, &image), Ok(Value::Counter(66)));
        counter.format = Some(Spanned::new(0..0, Format::F32));
        assert_eq!(decode(&counter, &image), Err(DecodeError::FloatCounter));
    }

    #[test]
    fn deadband_drift_accumulates_against_the_last_reported_value() {
        let mut p = point(PointKind::Measured, Table::Input, 0, None);
        p.deadband = Some(Spanned::new(0..0, 1.0));
        let m = Value::Measured;
        assert_eq!(change(&p, None, &m(10.0)), Some(true));
        assert_eq!(change(&p, Some(&m(10.0)), &m(10.4)), None);
        assert_eq!(change(&p, Some(&m(10.0)), &m(10.8)), None);
        assert_eq!(change(&p, Some(&m(10.0)), &m(11.0)), Some(true));
        assert_eq!(change(&p, Some(&m(10.0)), &m(9.0)), Some(true));
        p.deadband = None;
        assert_eq!(change(&p, Some(&m(10.0)), &m(10.01)), Some(true));
        assert_eq!(change(&p, Some(&m(10.0)), &m(10.0)), None);
    }

    #[test]
    fn indications_and_counters() {
        let p = point(PointKind::Double, Table::Coil, 0, None);
        assert_eq!(change(&p, None, &Value::Double(1)), Some(true));
        assert_eq!(change(&p, Some(&Value::Double(1)), &Value::Double(1)), None);
        assert_eq!(
            change(&p, Some(&Value::Double(1)), &Value::Double(0)),
            Some(true)
        );
        let c = point(PointKind::Counter, Table::Input, 0, None);
        assert_eq!(change(&c, None, &Value::Counter(5)), Some(false));
        assert_eq!(
            change(&c, Some(&Value::Counter(5)), &Value::Counter(5)),
            None
        );
        assert_eq!(
            change(&c, Some(&Value::Counter(5)), &Value::Counter(6)),
            Some(false)
        );
    }
}
