"""What a prediction tells a reader: report.json and the summary rows, the overview picture."""
