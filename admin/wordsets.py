"""Built-in word sets for the embedding playground: groups a good embedding model keeps apart.

Each set has a few dozen common words, so six of them stay near 150 texts (one /api/embed call).
"""

from __future__ import annotations

SETS: dict[str, tuple[str, ...]] = {
    "animals": (
        "dog", "cat", "horse", "cow", "sheep", "goat", "pig", "rabbit", "lion", "tiger", "elephant",
        "giraffe", "zebra", "monkey", "bear", "wolf", "fox", "deer", "mouse", "squirrel", "eagle",
        "owl", "parrot", "penguin", "dolphin", "whale", "shark", "salmon", "frog", "snake",
    ),
    "vehicles": (
        "car", "bus", "truck", "van", "taxi", "tram", "train", "subway", "bicycle", "motorcycle",
        "scooter", "skateboard", "airplane", "helicopter", "glider", "rocket", "ship", "ferry",
        "sailboat", "canoe", "kayak", "submarine", "tractor", "ambulance", "fire engine", "limousine",
        "minivan", "pickup truck", "cable car", "hot air balloon",
    ),
    "emotions": (
        "joy", "happiness", "sadness", "anger", "fear", "surprise", "disgust", "love", "hate",
        "jealousy", "envy", "pride", "shame", "guilt", "anxiety", "relief", "hope", "despair",
        "gratitude", "loneliness", "boredom", "curiosity", "excitement", "calm", "frustration",
        "embarrassment", "nostalgia", "contentment", "grief", "awe",
    ),
    "fruits": (
        "apple", "banana", "orange", "pear", "peach", "plum", "cherry", "grape", "strawberry",
        "raspberry", "blueberry", "blackberry", "lemon", "lime", "grapefruit", "mango", "papaya",
        "pineapple", "kiwi", "melon", "watermelon", "apricot", "fig", "pomegranate", "coconut",
        "lychee", "passion fruit", "guava", "date", "cranberry",
    ),
    "professions": (
        "doctor", "nurse", "teacher", "engineer", "lawyer", "judge", "architect", "carpenter",
        "plumber", "electrician", "chef", "baker", "farmer", "pilot", "firefighter", "police officer",
        "journalist", "accountant", "dentist", "pharmacist", "programmer", "scientist", "librarian",
        "mechanic", "painter", "musician", "actor", "photographer", "translator", "veterinarian",
    ),
    "sports": (
        "football", "soccer", "basketball", "tennis", "golf", "baseball", "volleyball", "rugby",
        "cricket", "hockey", "swimming", "cycling", "running", "skiing", "snowboarding", "surfing",
        "boxing", "wrestling", "judo", "karate", "fencing", "archery", "rowing", "sailing",
        "climbing", "gymnastics", "badminton", "table tennis", "marathon", "triathlon",
    ),
}  # fmt: skip

DEFAULT = ("animals", "vehicles", "emotions")
