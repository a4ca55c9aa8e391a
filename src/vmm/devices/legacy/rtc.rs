//! A CMOS real-time clock (MC146818) at ports 0x70/0x71 that reports the
//! host's UTC time in BCD, 24-hour mode.

use crate::vmm::bus::BusDevice;

/// The CMOS RTC: offset 0 is the index register, offset 1 the data register.
pub struct Rtc {
    index: u8,
    ram: [u8; 128],
}

fn bcd(v: u32) -> u8 {
    (((v / 10) % 10) << 4 | (v % 10)) as u8
}

impl Default for Rtc {
    fn default() -> Self {
        Rtc {
            index: 0,
            ram: [0; 128],
        }
    }
}

impl Rtc {
    fn time_register(&self, index: u8) -> Option<u8> {
        if index > 0x09 && index != 0x32 {
            return None;
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut tm = libc::tm {
            tm_sec: 0,
            tm_min: 0,
            tm_hour: 0,
            tm_mday: 1,
            tm_mon: 0,
            tm_year: 70,
            tm_wday: 4,
            tm_yday: 0,
            tm_isdst: 0,
            tm_gmtoff: 0,
            tm_zone: std::ptr::null(),
        };
        let t: libc::time_t = secs;
        // SAFETY: gmtime_r writes only into `tm`, which outlives the call.
        unsafe { libc::gmtime_r(&t, &mut tm) };
        let year = (tm.tm_year + 1900) as u32;
        Some(match index {
            0x00 => bcd(tm.tm_sec as u32),
            0x02 => bcd(tm.tm_min as u32),
            0x04 => bcd(tm.tm_hour as u32),
            0x06 => bcd(tm.tm_wday as u32 + 1),
            0x07 => bcd(tm.tm_mday as u32),
            0x08 => bcd(tm.tm_mon as u32 + 1),
            0x09 => bcd(year % 100),
            0x32 => bcd(year / 100),
            _ => 0, // alarms
        })
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some(b) = data.first_mut() else { return };
        if offset != 1 {
            *b = self.index;
            return;
        }
        *b = match self.index {
            0x0a => 0x26, // 32.768 kHz base, 1024 Hz rate, no update in progress
            0x0b => 0x02, // 24-hour, BCD
            0x0c => 0x00,
            0x0d => 0x80, // valid RAM and time
            i => self.time_register(i).unwrap_or(self.ram[i as usize & 0x7f]),
        };
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&v) = data.first() else { return };
        if offset == 0 {
            self.index = v & 0x7f;
        } else if self.index > 0x0d {
            self.ram[self.index as usize & 0x7f] = v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_bcd_time() {
        let mut rtc = Rtc::default();
        let mut b = [0u8];
        rtc.write(0, &[0x0b]);
        rtc.read(1, &mut b);
        assert_eq!(b[0], 0x02);
        rtc.write(0, &[0x32]);
        rtc.read(1, &mut b);
        assert_eq!(b[0], 0x20, "21st century");
        rtc.write(0, &[0x04]);
        rtc.read(1, &mut b);
        assert!(b[0] >> 4 <= 2 && b[0] & 0xf <= 9);
    }
}
