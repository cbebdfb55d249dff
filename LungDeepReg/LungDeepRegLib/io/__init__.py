"""Reading and writing: images, landmarks, displacement fields; all writes atomic."""
