"""The operator API: query and act on broadcasts, fragments and jobs."""
