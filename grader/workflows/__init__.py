"""What people run around grading: a TA's batch (grade-all) and gradebook, the student's
feedback page, and the submission zip a student packs."""
