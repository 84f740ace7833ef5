"""Redis: URLs and connections (`connect`), and the embedded server started when nothing answers locally."""
