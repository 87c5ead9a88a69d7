"""Network blocks shared by the teacher's heads, the students and serving: SASRec, the item and
user towers' layers."""
