"""custate: an event-sourced customer state projector for Voucherify customer activities."""

__version__ = "0.1.0"
