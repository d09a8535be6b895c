"""Pictures: plots, run figures, posterior snapshots, the HTML report and the explorer."""
