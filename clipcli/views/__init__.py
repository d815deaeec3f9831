"""Results drawn for people: HTML pages, contact sheets and charts of what the commands found."""
