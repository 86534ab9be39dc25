//! CP56Time2a, the seven-octet time tag of IEC 60870-5-4 used by every `*_TB_1`, `*_TA_1`
//! type and by clock synchronisation.
//!
//! ```text
//! octet 1-2  milliseconds within the minute, 0..=59999, little endian
//! octet 3    IV | RES1 | minute (6 bits, 0..=59)
//! octet 4    SU | RES2 (2 bits) | hour (5 bits, 0..=23)
//! octet 5    day of week (3 bits, 1 = Monday .. 7 = Sunday, 0 = unused) | day of month (5 bits)
//! octet 6    RES3 (4 bits) | month (4 bits, 1..=12)
//! octet 7    RES4 | year (7 bits, 0..=99)
//! ```
//!
//! The year has no century, so this codec assumes 2000..=2099. Times are taken as UTC: the SU
//! (summer time) flag is carried but never applied, because a front end that re-dates
//! events by a local-time rule would silently shift them. Reserved bits are ignored on
//! decode and written as zero.

use thiserror::Error;

/// The encoded size of a CP56Time2a.
pub(super) const CP56_LEN: usize = 7;

const MS_PER_DAY: i64 = 86_400_000;
/// 2000-01-01T00:00:00Z in days since the Unix epoch.
const UNIX_DAYS_AT_2000: i64 = 10_957;
/// Four Gregorian years, one of them leap; within 2000..=2099 every fourth year is leap
/// (2000 is, 2100 is outside the range), so the calendar repeats every 1461 days.
const DAYS_PER_4_YEARS: i64 = 1461;
/// Unix ms of 2100-01-01T00:00:00Z, the first instant that cannot be encoded.
const UNIX_MS_AT_2100: i64 = 4_102_444_800_000;
const UNIX_MS_AT_2000: i64 = UNIX_DAYS_AT_2000 * MS_PER_DAY;

/// Why a time tag cannot be decoded or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TimeError {
    #[error("CP56Time2a {field} {value} is out of range")]
    FieldOutOfRange { field: &'static str, value: u16 },
    #[error("CP56Time2a date 20{year:02}-{month:02}-{day:02} does not exist")]
    NoSuchDay { year: u8, month: u8, day: u8 },
    #[error("Unix time {unix_ms} ms is outside 2000..=2099, which CP56Time2a cannot express")]
    OutOfCentury { unix_ms: i64 },
}

/// A validated CP56Time2a: every value of this type names a real instant in 2000..=2099.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cp56Time2a {
    /// Years after 2000.
    year: u8,
    month: u8,
    day: u8,
    day_of_week: u8,
    hour: u8,
    minute: u8,
    ms_of_minute: u16,
    invalid: bool,
    summer_time: bool,
}

impl Cp56Time2a {
    /// A time from calendar fields in UTC; the day of week is filled in from the date.
    pub fn new(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        ms_of_minute: u16,
    ) -> Result<Self, TimeError> {
        let short_year =
            year.checked_sub(2000)
                .filter(|y| *y <= 99)
                .ok_or(TimeError::FieldOutOfRange {
                    field: "year",
                    value: year,
                })?;
        let mut time = Self {
            year: short_year as u8,
            month,
            day,
            day_of_week: 0,
            hour,
            minute,
            ms_of_minute,
            invalid: false,
            summer_time: false,
        };
        time.validate()?;
        time.day_of_week = weekday(days_since_2000(time.year, month, day));
        Ok(time)
    }

    /// The instant `unix_ms` milliseconds after 1970-01-01T00:00:00Z.
    pub fn from_unix_ms(unix_ms: i64) -> Result<Self, TimeError> {
        if !(UNIX_MS_AT_2000..UNIX_MS_AT_2100).contains(&unix_ms) {
            return Err(TimeError::OutOfCentury { unix_ms });
        }
        let since_2000 = unix_ms - UNIX_MS_AT_2000;
        let days = since_2000.div_euclid(MS_PER_DAY);
        let ms_of_day = since_2000.rem_euclid(MS_PER_DAY);
        let (year, month, day) = date_from_days(days);
        Ok(Self {
            year,
            month,
            day,
            day_of_week: weekday(days),
            hour: (ms_of_day / 3_600_000) as u8,
            minute: (ms_of_day / 60_000 % 60) as u8,
            ms_of_minute: (ms_of_day % 60_000) as u16,
            invalid: false,
            summer_time: false,
        })
    }

    /// Milliseconds since the Unix epoch, reading the fields as UTC.
    pub fn to_unix_ms(&self) -> i64 {
        let days = UNIX_DAYS_AT_2000 + days_since_2000(self.year, self.month, self.day);
        days * MS_PER_DAY
            + i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.ms_of_minute)
    }

    /// Marks the time as invalid (IV), e.g. when the source clock is not synchronised.
    pub fn with_invalid(mut self, invalid: bool) -> Self {
        self.invalid = invalid;
        self
    }

    pub fn with_summer_time(mut self, summer_time: bool) -> Self {
        self.summer_time = summer_time;
        self
    }

    /// Overrides the day of week; 0 means "not used", which some stations expect.
    pub fn with_day_of_week(mut self, day_of_week: u8) -> Result<Self, TimeError> {
        if day_of_week > 7 {
            return Err(TimeError::FieldOutOfRange {
                field: "day of week",
                value: day_of_week.into(),
            });
        }
        self.day_of_week = day_of_week;
        Ok(self)
    }

    pub fn year(&self) -> u16 {
        2000 + u16::from(self.year)
    }
    pub fn month(&self) -> u8 {
        self.month
    }
    pub fn day(&self) -> u8 {
        self.day
    }
    /// 1 = Monday .. 7 = Sunday, or 0 when the sender did not fill it in.
    pub fn day_of_week(&self) -> u8 {
        self.day_of_week
    }
    pub fn hour(&self) -> u8 {
        self.hour
    }
    pub fn minute(&self) -> u8 {
        self.minute
    }
    /// Seconds and milliseconds together, as the wire carries them: 0..=59999.
    pub fn ms_of_minute(&self) -> u16 {
        self.ms_of_minute
    }
    pub fn invalid(&self) -> bool {
        self.invalid
    }
    pub fn summer_time(&self) -> bool {
        self.summer_time
    }

    pub fn decode(bytes: [u8; CP56_LEN]) -> Result<Self, TimeError> {
        let [ms_lo, ms_hi, minute, hour, day, month, year] = bytes;
        let time = Self {
            year: year & 0x7f,
            month: month & 0x0f,
            day: day & 0x1f,
            day_of_week: day >> 5,
            hour: hour & 0x1f,
            minute: minute & 0x3f,
            ms_of_minute: u16::from_le_bytes([ms_lo, ms_hi]),
            invalid: minute & 0x80 != 0,
            summer_time: hour & 0x80 != 0,
        };
        time.validate()?;
        Ok(time)
    }

    pub fn encode(&self) -> [u8; CP56_LEN] {
        let [ms_lo, ms_hi] = self.ms_of_minute.to_le_bytes();
        [
            ms_lo,
            ms_hi,
            self.minute | if self.invalid { 0x80 } else { 0 },
            self.hour | if self.summer_time { 0x80 } else { 0 },
            self.day | (self.day_of_week << 5),
            self.month,
            self.year,
        ]
    }

    /// The day of week is valid by construction (3 bits after masking, or checked by
    /// `with_day_of_week`); everything else is checked here.
    fn validate(&self) -> Result<(), TimeError> {
        let out_of_range = |field, value: u16| TimeError::FieldOutOfRange { field, value };
        // Seven bits could say up to 127, but the standard stops at 99.
        if self.year > 99 {
            return Err(out_of_range("year", self.year.into()));
        }
        if self.ms_of_minute > 59_999 {
            return Err(out_of_range("milliseconds", self.ms_of_minute));
        }
        if self.minute > 59 {
            return Err(out_of_range("minute", self.minute.into()));
        }
        if self.hour > 23 {
            return Err(out_of_range("hour", self.hour.into()));
        }
        if !(1..=12).contains(&self.month) {
            return Err(out_of_range("month", self.month.into()));
        }
        if self.day == 0 || self.day > days_in_month(self.year, self.month) {
            return Err(TimeError::NoSuchDay {
                year: self.year,
                month: self.month,
                day: self.day,
            });
        }
        Ok(())
    }
}

fn is_leap(year: u8) -> bool {
    year.is_multiple_of(4)
}

fn days_in_month(year: u8, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn days_since_2000(year: u8, month: u8, day: u8) -> i64 {
    let years = i64::from(year);
    // Leap years strictly before `year`, counting 2000 itself.
    let leap_days = (years + 3) / 4;
    let before_month: i64 = (1..month).map(|m| i64::from(days_in_month(year, m))).sum();
    years * 365 + leap_days + before_month + i64::from(day) - 1
}

/// The inverse of `days_since_2000` for 0..36525 days.
fn date_from_days(days: i64) -> (u8, u8, u8) {
    let cycles = days / DAYS_PER_4_YEARS;
    let mut day_of_cycle = days % DAYS_PER_4_YEARS;
    let mut year = (cycles * 4) as u8;
    // The first year of each cycle is the leap one.
    let mut year_len = 366;
    while day_of_cycle >= year_len {
        day_of_cycle -= year_len;
        year += 1;
        year_len = 365;
    }
    let mut month = 1;
    loop {
        let len = i64::from(days_in_month(year, month));
        if day_of_cycle < len || month == 12 {
            break;
        }
        day_of_cycle -= len;
        month += 1;
    }
    (year, month, day_of_cycle as u8 + 1)
}

/// 2000-01-01 was a Saturday (6 in the 1 = Monday numbering).
fn weekday(days_since_2000: i64) -> u8 {
    ((days_since_2000 + 5).rem_euclid(7) + 1) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instant_round_trips() {
        // 2024-03-15T13:45:30.250Z: 19797 days after 1970-01-01 (19723 to 2024-01-01, then
        // 31 + 29 + 14), so 19797 * 86400 + 13 * 3600 + 45 * 60 + 30 = 1710510330 s.
        let t = Cp56Time2a::from_unix_ms(1_710_510_330_250).expect("in range");
        assert_eq!(
            (t.year(), t.month(), t.day(), t.hour(), t.minute()),
            (2024, 3, 15, 13, 45)
        );
        assert_eq!(t.ms_of_minute(), 30_250);
        assert_eq!(t.day_of_week(), 5, "a Friday");
        assert_eq!(t.to_unix_ms(), 1_710_510_330_250);
        assert_eq!(Cp56Time2a::new(2024, 3, 15, 13, 45, 30_250), Ok(t));
    }

    #[test]
    fn century_edges() {
        let first = Cp56Time2a::from_unix_ms(UNIX_MS_AT_2000).expect("2000 is encodable");
        assert_eq!((first.year(), first.month(), first.day()), (2000, 1, 1));
        assert_eq!(first.day_of_week(), 6);
        let last = Cp56Time2a::from_unix_ms(UNIX_MS_AT_2100 - 1).expect("2099 is encodable");
        assert_eq!((last.year(), last.month(), last.day()), (2099, 12, 31));
        assert_eq!(last.to_unix_ms(), UNIX_MS_AT_2100 - 1);
        assert!(Cp56Time2a::from_unix_ms(UNIX_MS_AT_2100).is_err());
        assert!(Cp56Time2a::from_unix_ms(UNIX_MS_AT_2000 - 1).is_err());
        assert!(Cp56Time2a::from_unix_ms(i64::MIN).is_err());
    }

    #[test]
    fn leap_days() {
        let feb29 = Cp56Time2a::new(2024, 2, 29, 0, 0, 0).expect("2024 is leap");
        assert_eq!(Cp56Time2a::from_unix_ms(feb29.to_unix_ms()), Ok(feb29));
        assert!(matches!(
            Cp56Time2a::new(2023, 2, 29, 0, 0, 0),
            Err(TimeError::NoSuchDay { .. })
        ));
    }

    #[test]
    fn decode_rejects_out_of_range_fields() {
        let good = Cp56Time2a::new(2024, 3, 15, 13, 45, 30_250)
            .expect("valid")
            .encode();
        assert!(Cp56Time2a::decode(good).is_ok());
        let mut bad = good;
        bad[0..2].copy_from_slice(&60_000u16.to_le_bytes());
        assert!(Cp56Time2a::decode(bad).is_err());
        // minute 60, hour 24, day 0, month 0, month 13, year 100
        for (octet, value) in [(2, 60), (3, 24), (4, 0), (5, 0), (5, 13), (6, 100)] {
            let mut bad = good;
            bad[octet] = value;
            assert!(Cp56Time2a::decode(bad).is_err(), "octet {octet} = {value}");
        }
        let mut april31 = good;
        april31[4] = 31;
        april31[5] = 4;
        assert!(Cp56Time2a::decode(april31).is_err());
    }

    #[test]
    fn flags_and_reserved_bits() {
        let t = Cp56Time2a::new(2024, 3, 15, 13, 45, 30_250)
            .expect("valid")
            .with_invalid(true)
            .with_summer_time(true);
        let mut bytes = t.encode();
        assert_eq!(bytes[2], 0x80 | 45);
        assert_eq!(bytes[3], 0x80 | 13);
        // Reserved bits set by a sender do not change the value.
        bytes[2] |= 0x40;
        bytes[3] |= 0x60;
        bytes[5] |= 0xf0;
        bytes[6] |= 0x80;
        assert_eq!(Cp56Time2a::decode(bytes), Ok(t));
    }
}
