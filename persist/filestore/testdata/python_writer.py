# Writes python_writer.csv with Python's csv.writer (QUOTE_MINIMAL, "\r\n"),
# the way the course's store_bets does. TestPythonWrittenFile reads it back.
# Regenerate with: PYTHONUTF8=1 python3 python_writer.py > python_writer.csv
import csv
import sys

ROWS = [
    [1, "Santiago Lionel", "Lorca", "30904465", "1999-03-17", 7574],
    [2, "María José", "Pérez García", "00000042", "1960-02-29", 0],
    [3, "Juan, Carlos", 'Ana "La Rubia"', "0", "1900-01-01", 9999],
    [4, '"', ",", "1234567890", "2000-12-31", 7574],
    [5, "José\nLuis", "Smith\r\nJones", "0012", "1985-07-04", 42],
    [6, "Carriage\rReturn", " spaced ", "99", "1970-01-01", 1],
    [7, "Tab\there", "Emoji 🎲", "7", "2024-02-29", 7574],
]

out = csv.writer(sys.stdout, quoting=csv.QUOTE_MINIMAL)
for row in ROWS:
    out.writerow(row)
