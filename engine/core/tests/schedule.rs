//! Check-in windows across time zones and DST changes, pauses, and the
//! no-answer ladder.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use voicecare_core::Level;
use voicecare_core::schedule::{
    AttemptOutcome as O, Ladder, LadderAction, LadderError, LadderPolicy, LadderResult, Pause,
    Schedule, ScheduleError, SilentPolicy,
};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("test timestamp")
        .with_timezone(&Utc)
}

fn date(s: &str) -> NaiveDate {
    s.parse().expect("test date")
}

fn every_day(start: &str, end: &str) -> Schedule {
    Schedule {
        days: vec![
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ],
        window_start: NaiveTime::parse_from_str(start, "%H:%M").expect("time"),
        window_end: NaiveTime::parse_from_str(end, "%H:%M").expect("time"),
        paused: vec![],
    }
}

const NY: Tz = chrono_tz::America::New_York;
const LONDON: Tz = chrono_tz::Europe::London;
const SHANGHAI: Tz = chrono_tz::Asia::Shanghai;

#[test]
fn morning_window_follows_new_york_spring_forward() {
    let s = every_day("09:00", "11:00");
    // EST (UTC-5) the day before, EDT (UTC-4) on the change day itself.
    let sat = s.window_on(NY, date("2026-03-07"));
    assert_eq!(sat.start, utc("2026-03-07T14:00:00Z"));
    let sun = s.window_on(NY, date("2026-03-08"));
    assert_eq!(sun.start, utc("2026-03-08T13:00:00Z"));
    assert_eq!(sun.end, utc("2026-03-08T15:00:00Z"));
    // Due at Sunday's opening, having called on Saturday.
    let due = s.next_due(
        NY,
        &[utc("2026-03-07T14:00:00Z")],
        utc("2026-03-07T20:00:00Z"),
    );
    assert_eq!(due, Some(utc("2026-03-08T13:00:00Z")));
}

#[test]
fn window_inside_the_spring_gap_moves_forward_and_keeps_its_length() {
    // 02:00-03:00 does not exist on 8 March 2026 in New York.
    let s = every_day("02:00", "03:00");
    let occ = s.window_on(NY, date("2026-03-08"));
    assert_eq!(occ.start, utc("2026-03-08T07:00:00Z")); // 03:00 EDT
    assert_eq!(occ.end, occ.start + Duration::hours(1));
    // 02:30 moves forward by the gap to 03:30 EDT.
    let half = every_day("02:30", "04:00").window_on(NY, date("2026-03-08"));
    assert_eq!(half.start, utc("2026-03-08T07:30:00Z"));
    // Exactly one window that day: after it is attempted, the next is Monday's.
    let due = s.next_due(NY, &[occ.start], occ.start + Duration::minutes(5));
    assert_eq!(due, Some(s.window_on(NY, date("2026-03-09")).start));
    assert_eq!(due, Some(utc("2026-03-09T06:00:00Z")));
}

#[test]
fn window_in_the_autumn_overlap_takes_the_first_and_runs_once() {
    let s = every_day("01:00", "02:00");
    let occ = s.window_on(NY, date("2026-11-01"));
    assert_eq!(occ.start, utc("2026-11-01T05:00:00Z")); // first 01:00, EDT
    assert_eq!(occ.end, utc("2026-11-01T07:00:00Z")); // 02:00 EST
    // Called at the first 01:30; at the second 01:30 it is not due again.
    let second_0130 = utc("2026-11-01T06:30:00Z");
    let due = s.next_due(NY, &[utc("2026-11-01T05:30:00Z")], second_0130);
    assert_eq!(due, Some(utc("2026-11-02T06:00:00Z")));
}

#[test]
fn london_changes_on_its_own_dates() {
    let s = every_day("10:00", "12:00");
    assert_eq!(
        s.window_on(LONDON, date("2026-03-28")).start,
        utc("2026-03-28T10:00:00Z")
    );
    assert_eq!(
        s.window_on(LONDON, date("2026-03-29")).start,
        utc("2026-03-29T09:00:00Z")
    );
    assert_eq!(
        s.window_on(LONDON, date("2026-10-25")).start,
        utc("2026-10-25T10:00:00Z")
    );
    // 01:30 does not exist on 29 March in London: moves to 02:30 BST.
    let gap = every_day("01:30", "03:00").window_on(LONDON, date("2026-03-29"));
    assert_eq!(gap.start, utc("2026-03-29T01:30:00Z"));
    // 01:30 exists twice on 25 October: the first (BST).
    let overlap = every_day("01:30", "03:00").window_on(LONDON, date("2026-10-25"));
    assert_eq!(overlap.start, utc("2026-10-25T00:30:00Z"));
}

#[test]
fn shanghai_has_no_dst() {
    let s = every_day("09:00", "10:00");
    for d in ["2026-01-15", "2026-03-08", "2026-07-01", "2026-11-01"] {
        let occ = s.window_on(SHANGHAI, date(d));
        assert_eq!(occ.start, utc(&format!("{d}T01:00:00Z")));
        assert_eq!(occ.end - occ.start, Duration::hours(1));
    }
}

#[test]
fn open_window_is_due_now_and_taken_once_attempted() {
    let s = every_day("09:00", "11:00");
    let now = utc("2026-06-10T01:30:00Z"); // 09:30 in Shanghai
    assert_eq!(s.next_due(SHANGHAI, &[], now), Some(now));
    let tried = [utc("2026-06-10T01:05:00Z")];
    assert_eq!(
        s.next_due(SHANGHAI, &tried, now),
        Some(utc("2026-06-11T01:00:00Z"))
    );
    // An attempt outside the window (a manual call yesterday) does not count.
    let yesterday = [utc("2026-06-09T08:00:00Z")];
    assert_eq!(s.next_due(SHANGHAI, &yesterday, now), Some(now));
}

#[test]
fn window_crossing_midnight_belongs_to_the_day_it_opens() {
    // Night-shift check-in for an elder who sleeps late: Fridays 22:00-02:00.
    let s = Schedule {
        days: vec![Weekday::Fri],
        ..every_day("22:00", "02:00")
    };
    let fri = s.window_on(SHANGHAI, date("2026-11-27"));
    assert_eq!(fri.start, utc("2026-11-27T14:00:00Z"));
    assert_eq!(fri.end, utc("2026-11-27T18:00:00Z"));
    // Saturday 01:00 local: Friday's window is still open and untried.
    let sat_1am = utc("2026-11-27T17:00:00Z");
    assert_eq!(s.next_due(SHANGHAI, &[], sat_1am), Some(sat_1am));
    // Once tried, the next is a week later.
    assert_eq!(
        s.next_due(SHANGHAI, &[utc("2026-11-27T14:10:00Z")], sat_1am),
        Some(utc("2026-12-04T14:00:00Z"))
    );
    // After it closes at 02:00, untried: also next week.
    assert_eq!(
        s.next_due(SHANGHAI, &[], utc("2026-11-27T18:00:00Z")),
        Some(utc("2026-12-04T14:00:00Z"))
    );
}

#[test]
fn days_of_week_are_local_days() {
    // Monday 09:00 in Shanghai is Monday 01:00 UTC; Sunday 20:00 UTC is
    // already Monday 04:00 there, so Monday's window is still ahead.
    let s = Schedule {
        days: vec![Weekday::Mon],
        ..every_day("09:00", "10:00")
    };
    assert_eq!(
        s.next_due(SHANGHAI, &[], utc("2026-11-29T20:00:00Z")),
        Some(utc("2026-11-30T01:00:00Z"))
    );
}

#[test]
fn paused_periods_skip_whole_days_and_open_ended_pause_stops_calls() {
    let mut s = every_day("09:00", "10:00");
    s.paused.push(Pause {
        from: date("2026-06-10"),
        until: Some(date("2026-06-14")),
        reason: Some("in hospital".into()),
    });
    let now = utc("2026-06-09T03:00:00Z"); // after the 9th's window in Shanghai
    assert_eq!(
        s.next_due(SHANGHAI, &[], now),
        Some(utc("2026-06-15T01:00:00Z"))
    );
    // Inside the paused days nothing is due until the pause ends.
    assert_eq!(
        s.next_due(SHANGHAI, &[], utc("2026-06-12T01:30:00Z")),
        Some(utc("2026-06-15T01:00:00Z"))
    );
    s.paused.push(Pause {
        from: date("2026-06-15"),
        until: None,
        reason: Some("moved in with family".into()),
    });
    assert_eq!(s.next_due(SHANGHAI, &[], now), None);
}

#[test]
fn no_days_means_never_due_and_does_not_validate() {
    let s = Schedule {
        days: vec![],
        ..every_day("09:00", "10:00")
    };
    assert_eq!(s.next_due(NY, &[], utc("2026-06-09T03:00:00Z")), None);
    assert_eq!(s.validate(), Err(ScheduleError::NoDays));
}

#[test]
fn backwards_pause_does_not_validate() {
    let mut s = every_day("09:00", "10:00");
    assert_eq!(s.validate(), Ok(()));
    s.paused.push(Pause {
        from: date("2026-06-10"),
        until: Some(date("2026-06-01")),
        reason: None,
    });
    let err = s.validate().expect_err("backwards");
    assert!(
        err.to_string()
            .contains("ends (2026-06-01) before it starts (2026-06-10)"),
        "{err}"
    );
}

#[test]
fn schedule_reads_from_toml() {
    let s: Schedule = toml::from_str(
        r#"
        days = ["mon", "wed", "Fri"]
        window_start = "09:30"
        window_end = "11:00"
        paused = [{ from = "2026-07-01", until = "2026-07-14", reason = "away" }]
        "#,
    )
    .expect("valid schedule");
    assert_eq!(s.days, vec![Weekday::Mon, Weekday::Wed, Weekday::Fri]);
    assert_eq!(
        s.window_start,
        NaiveTime::from_hms_opt(9, 30, 0).expect("time")
    );
    assert_eq!(s.paused[0].until, Some(date("2026-07-14")));
    let bad = toml::from_str::<Schedule>(
        "days = [\"mon\"]\nwindow_start = \"9.30\"\nwindow_end = \"11:00\"\n",
    );
    let err = bad.expect_err("bad time rejected").to_string();
    assert!(err.contains("HH:MM"), "{err}");
}

// ---- the no-answer ladder ----

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 10, 1, 0, 0)
        .single()
        .expect("time")
}

#[test]
fn default_policy_is_three_calls_ten_minutes_apart() {
    let p = LadderPolicy::default();
    assert_eq!(p.attempts, 3);
    assert_eq!(p.retry_after_minutes, 10);
    assert_eq!(p.escalate_level, Level::Urgent);
}

#[test]
fn full_ladder_walk_ends_with_urgent_escalation() {
    let (mut l, first) = Ladder::start(LadderPolicy::default(), 2, t0()).expect("valid");
    assert_eq!(first, LadderAction::CallElder { at: t0() });
    let t = |m: i64| t0() + Duration::minutes(m);
    assert_eq!(
        l.record(O::NoAnswer, t(1)),
        Ok(LadderAction::CallElder { at: t(11) })
    );
    assert_eq!(
        l.record(O::NoAnswer, t(12)),
        Ok(LadderAction::CallElder { at: t(22) })
    );
    assert_eq!(l.elder_calls(), 3);
    assert_eq!(
        l.record(O::NoAnswer, t(23)),
        Ok(LadderAction::CallContact {
            index: 0,
            at: t(23)
        })
    );
    assert_eq!(
        l.record(O::ContactNoAnswer, t(24)),
        Ok(LadderAction::CallContact {
            index: 1,
            at: t(24)
        })
    );
    match l.record(O::ContactNoAnswer, t(25)) {
        Ok(LadderAction::Escalate { level, reason }) => {
            assert_eq!(level, Level::Urgent);
            assert!(reason.contains("elder unreachable"), "{reason}");
            assert!(reason.contains("3 calls"), "{reason}");
            assert!(reason.contains("none of 2 emergency contacts"), "{reason}");
        }
        other => panic!("expected escalation, got {other:?}"),
    }
    assert!(l.is_finished());
    assert_eq!(l.result(), Some(LadderResult::Escalated));
    assert_eq!(l.record(O::NoAnswer, t(30)), Err(LadderError::Finished));
}

#[test]
fn contact_confirmation_stops_the_ladder() {
    let (mut l, _) = Ladder::start(LadderPolicy::default(), 3, t0()).expect("valid");
    for _ in 0..2 {
        assert!(matches!(
            l.record(O::NoAnswer, t0()),
            Ok(LadderAction::CallElder { .. })
        ));
    }
    assert!(matches!(
        l.record(O::Failed, t0()),
        Ok(LadderAction::CallContact { index: 0, .. })
    ));
    // Answering without pressing the key is not a confirmation.
    assert!(matches!(
        l.record(O::Answered, t0()),
        Ok(LadderAction::CallContact { index: 1, .. })
    ));
    assert_eq!(
        l.record(O::ContactConfirmed, t0()),
        Ok(LadderAction::Done(LadderResult::ContactConfirmed {
            index: 1
        }))
    );
    assert_eq!(
        l.result(),
        Some(LadderResult::ContactConfirmed { index: 1 })
    );
}

#[test]
fn answering_stops_the_ladder_and_busy_retries_sooner() {
    let (mut l, _) = Ladder::start(LadderPolicy::default(), 1, t0()).expect("valid");
    assert_eq!(
        l.record(O::Busy, t0()),
        Ok(LadderAction::CallElder {
            at: t0() + Duration::minutes(5)
        })
    );
    assert_eq!(
        l.record(O::Answered, t0()),
        Ok(LadderAction::Done(LadderResult::ReachedElder))
    );
}

#[test]
fn answered_silent_is_not_reached_by_default() {
    let (mut l, _) = Ladder::start(LadderPolicy::default(), 0, t0()).expect("valid");
    for _ in 0..2 {
        assert!(matches!(
            l.record(O::AnsweredSilent, t0()),
            Ok(LadderAction::CallElder { .. })
        ));
    }
    // No contacts on file: straight to the operator queue.
    match l.record(O::AnsweredSilent, t0()) {
        Ok(LadderAction::Escalate { reason, .. }) => {
            assert!(reason.contains("3 answered but silent"), "{reason}");
            assert!(reason.contains("no emergency contacts"), "{reason}");
        }
        other => panic!("expected escalation, got {other:?}"),
    }
    let policy = LadderPolicy {
        answered_silent: SilentPolicy::Reached,
        ..LadderPolicy::default()
    };
    let (mut l, _) = Ladder::start(policy, 0, t0()).expect("valid");
    assert_eq!(
        l.record(O::AnsweredSilent, t0()),
        Ok(LadderAction::Done(LadderResult::ReachedElder))
    );
}

#[test]
fn contact_outcomes_while_calling_the_elder_are_errors() {
    let (mut l, _) = Ladder::start(LadderPolicy::default(), 1, t0()).expect("valid");
    let err = l
        .record(O::ContactConfirmed, t0())
        .expect_err("wrong stage");
    assert!(err.to_string().contains("calling the elder"), "{err}");
    // The ladder is unharmed by the bad report.
    assert_eq!(
        l.record(O::Answered, t0()),
        Ok(LadderAction::Done(LadderResult::ReachedElder))
    );
}

#[test]
fn policy_from_toml_with_defaults_and_positions() {
    let p = LadderPolicy::from_toml("attempts = 4\nretry_after_minutes = 15\n").expect("valid");
    assert_eq!(p.attempts, 4);
    assert_eq!(p.retry_after_minutes, 15);
    assert_eq!(p.busy_retry_after_minutes, 5);
    let err = LadderPolicy::from_toml("attempts = 3\nretry_afer_minutes = 15\n").expect_err("typo");
    assert!(err.to_string().contains("2:1"), "{err}");
    let err = LadderPolicy::from_toml("attempts = 0\n").expect_err("zero");
    assert!(err.to_string().contains("attempts"), "{err}");
    let err = LadderPolicy::from_toml("escalate_level = \"watch\"\n").expect_err("too low");
    assert!(err.to_string().contains("urgent or emergency"), "{err}");
}

#[test]
fn ladder_state_round_trips_through_json() {
    let (mut l, _) = Ladder::start(LadderPolicy::default(), 2, t0()).expect("valid");
    let _ = l.record(O::NoAnswer, t0());
    let json = serde_json::to_string(&l).expect("serialise");
    let mut back: Ladder = serde_json::from_str(&json).expect("deserialise");
    assert_eq!(back, l);
    assert_eq!(back.record(O::NoAnswer, t0()), l.record(O::NoAnswer, t0()));
}

#[test]
fn elder_overrides_apply_on_top_of_the_programme_policy() {
    let programme =
        LadderPolicy::from_toml("attempts = 4\nretry_after_minutes = 15\n").expect("valid");
    // This elder is slow to reach the phone: more time between calls only.
    let elder = programme
        .with_overrides("retry_after_minutes = 20")
        .expect("valid");
    assert_eq!(elder.attempts, 4);
    assert_eq!(elder.retry_after_minutes, 20);
    assert_eq!(elder.escalate_level, Level::Urgent);
    let err = programme.with_overrides("atempts = 2").expect_err("typo");
    assert!(err.to_string().contains("atempts"), "{err}");
    let err = programme
        .with_overrides("attempts = 0")
        .expect_err("invalid");
    assert!(err.to_string().contains("1..=10"), "{err}");
}
