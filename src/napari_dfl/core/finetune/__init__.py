"""Fine-tuning a backbone's last blocks on labelled patches."""
