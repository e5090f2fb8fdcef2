from voicehooks.cli import app

app()
