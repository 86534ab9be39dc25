//! Modbus reply decoding: point definitions built from the input (any kind, table, address,
//! format, word order, and any f64 bits for scale, offset and deadband, NaN and infinities
//! included, as a hand-built `Point` could hold them) over poll images of two sorts:
//!
//! - arbitrary answers (any reads, any lengths of bits or registers, mismatched ones too):
//!   decoding never panics, a value is of the point's kind and in range (a double point
//!   0..=3, a measured value finite), and a counter never comes out of f32;
//! - the reads the planner makes for the points, each answered in full: then no point
//!   the validator would accept (every address it needs below 65536) is reported missing.
//!
//! `change` runs on every decoded value against an arbitrary last one, and a first value is
//! always reported.

use toml::Spanned;

use super::Input;
use crate::acquisition::decode::{DecodeError, change, decode};
use crate::acquisition::reads::{Data, Image, Read, plan};
use crate::site::{Format, Point, PointKind, Table, WordOrder};
use crate::state::points::Value;

const KINDS: [PointKind; 9] = [
    PointKind::Single,
    PointKind::Double,
    PointKind::Measured,
    PointKind::Counter,
    PointKind::SingleCommand,
    PointKind::DoubleCommand,
    PointKind::Setpoint,
    PointKind::Step,
    PointKind::Bitstring,
];
const TABLES: [Table; 4] = [
    Table::Coil,
    Table::DiscreteInput,
    Table::Holding,
    Table::Input,
];
const FORMATS: [Format; 5] = [
    Format::U16,
    Format::I16,
    Format::U32,
    Format::I32,
    Format::F32,
];

pub fn modbus_decode(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(mode) = input.u8() else {
        return;
    };
    let mut points = Vec::new();
    let count = 1 + mode % 8;
    for _ in 0..count {
        match point(&mut input) {
            Some(p) => points.push(p),
            None => break,
        }
    }
    if points.is_empty() {
        return;
    }
    let planned = mode & 0x80 != 0;
    let image = if planned {
        planned_image(&points, &mut input)
    } else {
        arbitrary_image(&mut input)
    };
    for p in &points {
        let result = decode(p, &image);
        check(p, &result);
        if planned && fits(p) {
            assert!(
                !matches!(result, Err(DecodeError::Missing { .. })),
                "planned and answered, yet {result:?} for {p:?}"
            );
        }
        if let Ok(new) = &result {
            assert!(change(p, None, new).is_some(), "a first value is reported");
            let last = value(&mut input);
            let _ = change(p, last.as_ref(), new);
        }
    }
}

fn point(input: &mut Input<'_>) -> Option<Point> {
    let bits = input.u8()?;
    let kind = KINDS[usize::from(bits % 9)];
    let table = (bits & 0x10 != 0).then(|| TABLES[usize::from(bits >> 5) % 4]);
    let shape = input.u8()?;
    let format = (shape & 0x08 != 0).then(|| FORMATS[usize::from(shape % 8) % 5]);
    let word_order = if shape & 0x10 != 0 {
        WordOrder::Little
    } else {
        WordOrder::Big
    };
    // Most points near the top or the bottom of the address space, where the edges are.
    let address = match shape >> 5 {
        0 => None,
        1 => Some(u16::MAX - u16::from(input.u8()? % 4)),
        2 | 3 => Some(u16::from(input.u8()?)),
        _ => Some(input.u16()?),
    };
    let (scale, offset) = if shape & 0x04 != 0 {
        (f64::from_bits(input.u64()?), f64::from_bits(input.u64()?))
    } else {
        (1.0, 0.0)
    };
    let deadband = if shape & 0x02 != 0 {
        Some(Spanned::new(0..0, f64::from_bits(input.u64()?)))
    } else {
        None
    };
    Some(Point {
        id: Spanned::new(0..0, "p".into()),
        rtu: Spanned::new(0..0, "rtu".into()),
        kind: Spanned::new(0..0, kind),
        table: table.map(|t| Spanned::new(0..0, t)),
        address: address.map(|a| Spanned::new(0..0, a)),
        type_id: None,
        ioa: None,
        common_address: None,
        format: format.map(|f| Spanned::new(0..0, f)),
        word_order,
        scale,
        offset,
        deadband,
        description: None,
    })
}

/// Any reads, answered with any data of any length.
fn arbitrary_image(input: &mut Input<'_>) -> Image {
    let mut image = Image::default();
    while let Some(read) = read(input) {
        let Some(len) = input.u8() else {
            break;
        };
        let data = if len & 0x80 != 0 {
            let bytes = input.bytes(usize::from(len & 0x7F)).unwrap_or_default();
            Data::Bits(bytes.iter().map(|b| b & 1 != 0).collect())
        } else {
            let bytes = input.bytes(2 * usize::from(len)).unwrap_or_default();
            Data::Registers(
                bytes
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
                    .collect(),
            )
        };
        image.insert(read, data);
    }
    image
}

fn read(input: &mut Input<'_>) -> Option<Read> {
    Some(Read {
        table: TABLES[usize::from(input.u8()? % 4)],
        start: input.u16()?,
        count: input.u16()?,
    })
}

/// The planner's reads for `points`, each answered with exactly what it asked for (the
/// values from the input, zero once it runs out).
fn planned_image(points: &[Point], input: &mut Input<'_>) -> Image {
    let refs: Vec<&Point> = points.iter().collect();
    let mut image = Image::default();
    for read in plan(&refs) {
        let n = usize::from(read.count);
        let data = if read.table.is_bits() {
            Data::Bits(
                (0..n)
                    .map(|_| input.u8().is_some_and(|b| b & 1 != 0))
                    .collect(),
            )
        } else {
            Data::Registers((0..n).map(|_| input.u16().unwrap_or(0)).collect())
        };
        image.insert(read, data);
    }
    image
}

/// Whether every address the point needs is below 65536, as the validator requires.
fn fits(point: &Point) -> bool {
    let table = point.modbus_table();
    let width: u32 = match (table.is_bits(), *point.kind.get_ref()) {
        (true, PointKind::Double) => 2,
        (true, _) => 1,
        (false, _) => point
            .format
            .as_ref()
            .map_or(1, |f| u32::from(f.get_ref().registers())),
    };
    u32::from(point.modbus_address()) + width <= 0x1_0000
}

fn check(point: &Point, result: &Result<Value, DecodeError>) {
    let kind = *point.kind.get_ref();
    let Ok(value) = result else {
        return;
    };
    match (kind, value) {
        (PointKind::Single, Value::Single(_)) | (PointKind::Counter, Value::Counter(_)) => {}
        (PointKind::Double, Value::Double(d)) => assert!(*d <= 3, "double point state {d}"),
        (PointKind::Measured, Value::Measured(m)) => assert!(m.is_finite(), "measured {m}"),
        _ => panic!("a {kind:?} point decoded as {value:?}"),
    }
    if kind == PointKind::Counter {
        let format = point.format.as_ref().map(|f| *f.get_ref());
        assert!(
            point.modbus_table().is_bits() || format != Some(Format::F32),
            "a counter read from f32"
        );
    }
}

/// A last reported value of any kind.
fn value(input: &mut Input<'_>) -> Option<Value> {
    let tag = input.u8()?;
    Some(match tag % 6 {
        0 => Value::Single(tag & 0x80 != 0),
        1 => Value::Double(tag >> 6),
        2 => Value::Measured(f64::from_bits(input.u64()?)),
        3 => Value::Counter(input.u64()? as i64),
        4 => Value::Step {
            value: (tag >> 1) as i8,
            transient: tag & 0x80 != 0,
        },
        _ => Value::Bits(u32::from(input.u16()?)),
    })
}
