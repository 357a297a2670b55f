"""Reports: tables and plots of measurements and training runs."""
