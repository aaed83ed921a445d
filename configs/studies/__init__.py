"""Study files: methods x seeds on one data set, run and tabulated by launch/study.py."""
