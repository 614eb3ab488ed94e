"""Connection profiles: heartbeat intervals, idle timeouts, quality and priority filtering."""

import pytest

from events import profiles
from events.profiles import ConnectionProfile, ProfileError


def test_intervals_follow_the_spec_adaptive_heartbeat():
    assert profiles.heartbeat_interval_ms(ConnectionProfile()) == 25_000
    assert profiles.heartbeat_interval_ms(ConnectionProfile(app_state="background")) == 120_000
    assert profiles.heartbeat_interval_ms(ConnectionProfile(performance_mode="battery_saver")) == 120_000
    assert profiles.heartbeat_interval_ms(ConnectionProfile(battery_level=19)) == 300_000
    assert profiles.heartbeat_interval_ms(ConnectionProfile(battery_level=15, performance_mode="battery_saver")) == (
        300_000
    )
    assert profiles.heartbeat_interval_ms(ConnectionProfile(battery_level=20)) == 25_000


def test_idle_timeout_is_the_same_multiple_of_every_interval(settings):
    assert profiles.idle_timeout_seconds(ConnectionProfile()) == pytest.approx(60)
    assert profiles.idle_timeout_seconds(ConnectionProfile(app_state="background")) == pytest.approx(288)
    assert profiles.idle_timeout_seconds(ConnectionProfile(battery_level=5)) == pytest.approx(720)
    settings.REALTIME_IDLE_TIMEOUT_SECONDS = 1
    settings.REALTIME_HEARTBEAT_INTERVAL_MS = 500
    settings.REALTIME_HEARTBEAT_BACKGROUND_MS = 2000
    assert profiles.idle_timeout_seconds(ConnectionProfile(app_state="background")) == pytest.approx(4)


def test_profile_from_params_takes_both_spellings_and_refuses_bad_values():
    profile = profiles.profile_from_params(
        {"apikey": ["x"], "batteryLevel": ["15"], "performance_mode": ["battery_saver"], "appState": ["background"]}
    )
    assert (profile.battery_level, profile.performance_mode, profile.app_state) == (15, "battery_saver", "background")
    assert profile.network_type is None and profile.connection_quality is None
    for params, field in (
        ({"battery_level": ["101"]}, "battery_level"),
        ({"battery_level": ["low"]}, "battery_level"),
        ({"performanceMode": ["turbo"]}, "performance_mode"),
        ({"connection_quality": ["great"]}, "connection_quality"),
        ({"network_type": ["5g"]}, "network_type"),
    ):
        with pytest.raises(ProfileError) as refused:
            profiles.profile_from_params(params)
        assert refused.value.reason.startswith(field)


def test_profile_update_changes_only_what_is_named():
    before = ConnectionProfile(battery_level=50, network_type="cellular")
    after = profiles.profile_update(before, {"connectionQuality": "poor", "event": "ignored"})
    assert after == ConnectionProfile(battery_level=50, network_type="cellular", connection_quality="poor")
    with pytest.raises(ProfileError):
        profiles.profile_update(before, {"battery_level": True})
    with pytest.raises(ProfileError):
        profiles.profile_update(before, {"battery_level": 12.5})


def test_quality_is_the_worse_of_declared_and_observed():
    assert profiles.effective_quality(ConnectionProfile()) == "excellent"
    assert profiles.effective_quality(ConnectionProfile(connection_quality="good"), observed="poor") == "poor"
    assert profiles.effective_quality(ConnectionProfile(connection_quality="poor"), observed=None) == "poor"
    assert profiles.effective_quality(ConnectionProfile(network_type="offline", connection_quality="excellent")) == (
        "offline"
    )


@pytest.mark.parametrize(
    ("quality", "mode", "admitted"),
    [
        ("excellent", "standard", {"low", "medium", "high", "critical"}),
        ("good", "standard", {"medium", "high", "critical"}),
        ("poor", "standard", {"high", "critical"}),
        ("offline", "standard", {"critical"}),
        ("good", "battery_saver", {"high", "critical"}),
        ("excellent", "battery_saver", {"low", "medium", "high", "critical"}),
        ("poor", "high_performance", {"medium", "high", "critical"}),
        ("offline", "high_performance", {"critical"}),
    ],
)
def test_priority_filtering_by_quality_and_mode(quality, mode, admitted):
    profile = ConnectionProfile(performance_mode=mode)
    got = {p for p in ("low", "medium", "high", "critical") if profiles.admits(profile, quality, p)}
    assert got == admitted


def test_critical_events_and_attendance_topics_are_never_held():
    assert profiles.never_held(priority="critical", event="x", sub_topic="rankings:org_1:student_2")
    assert profiles.never_held(priority="low", event="emergency_alert", sub_topic="notifications:org_1:role_all")
    assert profiles.never_held(priority="medium", event="attendance_sync", sub_topic="attendance:org_1:group_2")
    assert profiles.never_held(priority="medium", event="attendance_update", sub_topic="groups:org_1:teacher_2")
    assert not profiles.never_held(priority="high", event="ranking_update", sub_topic="rankings:org_1:student_2")


def test_late_heartbeat(settings):
    profile = ConnectionProfile()
    assert not profiles.heartbeat_late(profile, 45)
    assert profiles.heartbeat_late(profile, 51)
    assert not profiles.heartbeat_late(ConnectionProfile(app_state="background"), 200)
